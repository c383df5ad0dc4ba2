import pytest
import torch

from lightning_asr import offload
from lightning_asr.args import Speed
from lightning_asr.loss import token_loss
from tests.conftest import gpu, randomize_lora_b, tiny_module


def loss_and_grads(module, batch, device="cpu"):
    module.train()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        loss = token_loss(module.model.get_base_model(), batch["labels"].to(device), True,
                          input_features=batch["input_features"].to(device))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
    module.zero_grad()
    return loss.detach(), grads


def recorded(monkeypatch) -> list:
    """The tensors the offload hooks are handed, in order; each still goes through the real pack/unpack."""
    seen, pack = [], offload.pack
    monkeypatch.setattr(offload, "pack", lambda t: seen.append(t) or pack(t))
    return seen


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_offload_encoder_hands_each_checkpointed_layer_input_to_the_hooks_and_leaves_gradients_unchanged(
        tiny_model, batch, quantization, monkeypatch):
    def module(**speed):
        m = tiny_module(tiny_model, quantization=quantization, speed=Speed(**speed))
        randomize_lora_b(m, std=0.05)
        return m

    expected_loss, expected = loss_and_grads(module(gradient_checkpointing=True), batch)
    seen = recorded(monkeypatch)
    tiny = module(gradient_checkpointing=True, offload_encoder=True)
    loss, grads = loss_and_grads(tiny, batch)
    torch.testing.assert_close(loss, expected_loss)
    assert grads.keys() == expected.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], msg=name)
    config = tiny.model.config
    hidden = (len(batch["paths"]), config.max_source_positions, config.d_model)
    layer_inputs = [t for t in seen if tuple(t.shape) == hidden]
    # Checkpointed: each layer's input, with the encoder's own few saves around its layers; the checkpointed
    # regions keep their inner activations to themselves (recomputed in backward, never handed to the hooks).
    assert len(layer_inputs) >= config.encoder_layers
    checkpointed = len(seen)
    seen.clear()
    loss_and_grads(module(gradient_checkpointing=False, offload_encoder=True), batch)
    assert len(seen) > 2 * checkpointed  # without checkpointing every activation of every layer is offloaded


@gpu
@pytest.mark.gpu
def test_offload_encoder_on_gpu_keeps_layer_inputs_in_pinned_host_memory(tiny_model, batch, monkeypatch):
    def module(offload_encoder):
        m = tiny_module(tiny_model, quantization="none",
                        speed=Speed(gradient_checkpointing=True, offload_encoder=offload_encoder))
        randomize_lora_b(m, std=0.05)
        return m.cuda()

    expected_loss, expected = loss_and_grads(module(False), batch, "cuda")
    packed = []
    real_pack = offload.pack
    monkeypatch.setattr(offload, "pack", lambda t: packed.append(real_pack(t)) or packed[-1])
    loss, grads = loss_and_grads(module(True), batch, "cuda")
    offloaded = [p for p in packed if isinstance(p, tuple)]
    # What was already in host memory (0-d scalars autograd keeps on the CPU) is kept as it was handed over.
    assert not any(p.device.type == "cuda" for p in packed if not isinstance(p, tuple))
    assert offloaded and all(device.type == "cuda" and host.device.type == "cpu" and host.is_pinned()
                             for device, host in offloaded)
    torch.testing.assert_close(loss, expected_loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], msg=name)

