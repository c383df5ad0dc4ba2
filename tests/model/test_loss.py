import pytest
import torch

from lightning_asr.batch import LABEL_PAD
from lightning_asr.model.knobs import Speed
from lightning_asr.model.loss import token_loss
from tests.conftest import randomize_lora_b, tiny_module


def lora_grads(module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
    module.zero_grad()
    return grads


@pytest.mark.parametrize("quantization", ["none", "int8"])
@pytest.mark.parametrize("recompute", [False, True])
def test_token_loss_equals_transformers_loss_and_gradients_while_projecting_only_label_tokens(
    tiny_model, batch, quantization, recompute
):
    assert (batch["labels"] == LABEL_PAD).any()  # sentences of several lengths: some rows are padded
    module = tiny_module(tiny_model, quantization=quantization, speed=Speed(gradient_checkpointing=True))
    randomize_lora_b(module, std=0.05)  # B = 0 would give every LoRA A a zero gradient
    module.train()
    whisper = module.model.get_base_model()
    expected = module.model(input_features=batch["input_features"], labels=batch["labels"]).loss
    expected.backward()
    expected_grads = lora_grads(module)

    rows = []
    hook = whisper.proj_out.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    loss = token_loss(whisper, batch["labels"], recompute, chunk_tokens=5, input_features=batch["input_features"])
    projected = list(rows)
    loss.backward()
    hook.remove()
    tokens = int((batch["labels"] != LABEL_PAD).sum())
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for name, grad in lora_grads(module).items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # Padding is never projected, no chunk exceeds 5 tokens, and with recompute backward projects every chunk again.
    assert sum(projected) == tokens < batch["labels"].numel() and max(projected) <= 5
    assert len(rows) == len(projected) * (2 if recompute else 1)


def test_token_loss_refuses_labels_longer_than_the_decoder(tiny_model, batch):
    whisper = tiny_module(tiny_model, quantization="none").model.get_base_model()
    limit = whisper.config.max_target_positions
    labels = torch.full((1, limit + 1), 7)
    with pytest.raises(ValueError, match=f"labels of {limit + 1} tokens: Whisper's decoder holds {limit}"):
        token_loss(whisper, labels, False, input_features=batch["input_features"][:1])
