"""``model.speed.fp8``: torchao's FP8 linear layers for the frozen base (emulated on CPU, real on an FP8 GPU)."""

import pytest
import torch

from lightning_asr.model import fp8
from lightning_asr.model.knobs import Decoding, Speed
from lightning_asr.model.module import WhisperLoRA
from tests.conftest import gpu, randomize_lora_b, tiny_module

pytest.importorskip("torchao.float8", reason="model.speed.fp8 needs torchao (pip install 'lightning-asr[fp8]')")


def frozen_linears(module: WhisperLoRA) -> list[str]:
    whisper = module.model.get_base_model().model
    return [
        name
        for stack in ("encoder", "decoder")
        for name, m in getattr(whisper, stack).layers.named_modules()
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad
    ]


def loss_and_grads(module: WhisperLoRA, batch: dict) -> tuple[float, list[torch.Tensor]]:
    module.train()
    loss = module.model(input_features=batch["input_features"], labels=batch["labels"]).loss
    loss.backward()
    return loss.item(), [p.grad.flatten() for p in module.parameters() if p.requires_grad]


def test_fp8_swaps_the_frozen_base_layers_and_trains_close_to_full_precision(tiny_model, batch):
    plain = tiny_module(tiny_model, quantization="none")
    quick = tiny_module(tiny_model, quantization="none", speed=Speed(gradient_checkpointing=False, fp8=True))
    from torchao.float8.float8_linear import Float8Linear

    swapped = list(fp8.float8_layers(quick))
    # Every frozen projection of every layer (base layers under LoRA included), and nothing that trains.
    assert len(swapped) == len(frozen_linears(plain)) > 0
    assert all(not m.weight.requires_grad for m in swapped)
    assert not any(isinstance(m, Float8Linear) for n, m in quick.named_modules() if "lora_" in n)
    assert type(quick.model.get_base_model().proj_out) is torch.nn.Linear
    # Same parameters under the same names: checkpoints and saved adapters do not change.
    assert quick.state_dict().keys() == plain.state_dict().keys()
    for module in (plain, quick):
        randomize_lora_b(module)
    (loss, grads), (loss8, grads8) = loss_and_grads(plain, batch), loss_and_grads(quick, batch)
    assert loss8 != loss  # FP8's rounding really ran
    assert loss8 == pytest.approx(loss, rel=0.02)
    for g, g8 in zip(grads, grads8, strict=True):
        assert torch.nn.functional.cosine_similarity(g, g8, dim=0) > 0.95


@pytest.mark.parametrize("merge_lora", [False, True])  # packed-dense-fp8-bf16 validates with the LoRA merged
def test_fp8_decodes_in_the_base_dtype_and_trains_in_fp8_again(tiny_model, batch, merge_lora):
    decoding = Decoding(max_new_tokens=8, method="static", merge_lora=merge_lora)
    plain = tiny_module(tiny_model, quantization="none", decoding=decoding)
    quick = tiny_module(
        tiny_model, quantization="none", decoding=decoding, speed=Speed(gradient_checkpointing=False, fp8=True)
    )
    for module in (plain, quick):
        randomize_lora_b(module, std=0.05)
        module.eval()
    features = batch["input_features"]
    assert quick.transcribe(features) == plain.transcribe(features)
    with torch.no_grad(), fp8.high_precision(quick.model):  # the context transcribe decodes in
        torch.testing.assert_close(
            quick.model(input_features=features, labels=batch["labels"]).logits,
            plain.model(input_features=features, labels=batch["labels"]).logits,
        )
    # Outside it, FP8 again: the configs it swapped out are back.
    with torch.no_grad():
        outside = quick.model(input_features=features, labels=batch["labels"]).logits
    assert not torch.allclose(outside, plain.model(input_features=features, labels=batch["labels"]).logits)


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_fp8_refuses_a_k_bit_base(quantization):
    with pytest.raises(ValueError, match=f"model.speed.fp8: true needs model.quantization: none .got '{quantization}'"):
        WhisperLoRA(model="unused", language="mr", quantization=quantization, speed=Speed(fp8=True))


def test_fp8_names_a_gpu_without_fp8_tensor_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(ValueError, match=r"model.speed.fp8: true needs FP8 tensor cores.*NVIDIA A100 has 8.0"):
        fp8.require(torch.device("cuda", 0))


@gpu
def test_fp8_compiled_layers_train_on_an_fp8_gpu(tiny_model, batch):
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("needs a GPU with FP8 tensor cores")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    module = tiny_module(
        tiny_model,
        quantization="none",
        dtype="bfloat16",
        speed=Speed(gradient_checkpointing=True, compile=True, fp8=True),
    )
    module.model.to("cuda")
    randomize_lora_b(module)
    cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, grads = loss_and_grads(module, cuda)
    assert torch.isfinite(torch.tensor(loss)) and all(torch.isfinite(g).all() for g in grads)
    assert counters["stats"]["unique_graphs"] > 0 and not counters["graph_break"]
