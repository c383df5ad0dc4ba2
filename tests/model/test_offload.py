import pytest
import torch

from lightning_asr.model import offload
from lightning_asr.model.knobs import Speed
from lightning_asr.model.loss import token_loss
from tests.conftest import DEMO_MODEL, gpu, randomize_lora_b, tiny_module


def loss_and_grads(module, batch, device="cpu"):
    module.train()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        loss = token_loss(
            module.model.get_base_model(),
            batch["labels"].to(device),
            True,
            input_features=batch["input_features"].to(device),
        )
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
    tiny_model, batch, quantization, monkeypatch
):
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
        m = tiny_module(
            tiny_model, quantization="none", speed=Speed(gradient_checkpointing=True, offload_encoder=offload_encoder)
        )
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
    assert offloaded and all(
        device.type == "cuda" and host.device.type == "cpu" and host.is_pinned() for device, host in offloaded
    )
    torch.testing.assert_close(loss, expected_loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], msg=name)


def test_compiled_checkpointed_layers_take_back_what_was_offloaded_with_its_strides(tiny_model, batch, monkeypatch):
    """The round trip through host memory keeps each saved tensor's strides: compiled layers' backward asserts them
    (an offloaded copy made contiguous failed there on the GPU: the first layer's input is a transposed view).
    On CPU nothing is offloaded, so every saved tensor is sent to a fresh host copy and back through copy_to."""
    torch._dynamo.reset()

    def module(offload_encoder):
        m = tiny_module(
            tiny_model,
            quantization="none",
            speed=Speed(gradient_checkpointing=True, compile=True, offload_encoder=offload_encoder),
        )
        randomize_lora_b(m, std=0.05)
        return m

    expected_loss, expected = loss_and_grads(module(False), batch)
    round_trips = []
    monkeypatch.setattr(
        offload, "pack", lambda t: round_trips.append(t.is_contiguous()) or (t.device, offload.copy_to(t, "cpu"))
    )
    loss, grads = loss_and_grads(module(True), batch)
    assert False in round_trips  # the transposed first layer input went round too
    torch.testing.assert_close(loss, expected_loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], msg=name)


@pytest.mark.parametrize(
    ("speed", "lora_encoder", "says"),
    [
        (Speed(gradient_checkpointing=False, offload_encoder=True), True, "every activation of every encoder layer"),
        (Speed(offload_encoder=True), False, "does nothing with model.lora.encoder: false"),
        (Speed(offload_encoder=True), True, None),
    ],
)
def test_offload_encoder_warns_where_it_costs_more_or_does_nothing(speed, lora_encoder, says, caplog):
    from lightning_asr.model.lora import LoRA
    from lightning_asr.model.module import WhisperLoRA

    with caplog.at_level("WARNING", logger="lightning_asr.model.knobs"):
        WhisperLoRA(
            model=str(DEMO_MODEL), language="mr", quantization="none", speed=speed, lora=LoRA(encoder=lora_encoder)
        )
    offload_warnings = [r.getMessage() for r in caplog.records if "offload_encoder" in r.getMessage()]
    assert len(offload_warnings) == (says is not None)
    assert says is None or says in offload_warnings[0]


def test_copy_to_keeps_a_dense_tensors_strides_and_copies_an_expanded_one():
    transposed = torch.randn(2, 4, 3).transpose(1, 2)  # as the conv stem's output reaches the first layer
    copy = offload.copy_to(transposed, "cpu")
    assert copy.stride() == transposed.stride() and torch.equal(copy, transposed)
    expanded = torch.randn(3, 1).expand(3, 4)  # a copy into its own (zero) strides could not hold it
    assert torch.equal(offload.copy_to(expanded, "cpu"), expanded)
