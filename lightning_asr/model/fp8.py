"""FP8 matrix products for the frozen base's linear layers in training (``model.speed.fp8``), by torchao.

Each encoder and decoder layer's frozen ``nn.Linear`` (attention projections, feed-forward; under a LoRA
adapter, its base layer) becomes torchao's ``Float8Linear``: forward and input gradient multiply in FP8 with
tensorwise dynamic scales (e4m3 forward, e5m2 gradients), on the FP8 tensor cores of a Hopper or Ada GPU.
The adapters, the conv stem and the vocabulary projection stay in the base's dtype. The weights stay as they
are, so checkpoints, adapters and merged decoding do not change; decoding runs in the base's dtype
(:func:`high_precision`), so a score measures the adapter as it will be used, on a plain base.
"""

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

# torch._scaled_mm's shape rule for FP8 operands.
_MULTIPLE = 16


def require(device: torch.device) -> None:
    """Raise a clear error where FP8 training cannot run: no torchao, or a GPU without FP8 tensor cores."""
    try:
        import torchao.float8  # noqa: F401
    except ImportError as err:
        raise ImportError("model.speed.fp8: true needs torchao: pip install 'lightning-asr[fp8]'") from err
    if device.type != "cuda":
        return  # emulated (to_float8)
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        raise ValueError(
            f"model.speed.fp8: true needs FP8 tensor cores, compute capability 8.9 or newer (Ada, Hopper); "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}"
        )


def to_float8(whisper: torch.nn.Module, device: torch.device) -> int:
    """Swap the frozen linear layers of ``whisper``'s encoder and decoder layers for FP8 ones, in place.
    Off a GPU, torchao emulates them: FP8's rounding without its speed (tests, numerics checks). Returns
    how many were swapped."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    def frozen_base(module: torch.nn.Module, name: str) -> bool:
        return (
            type(module) is torch.nn.Linear
            and not module.weight.requires_grad
            and module.in_features % _MULTIPLE == 0
            and module.out_features % _MULTIPLE == 0
        )

    config = Float8LinearConfig(emulate=device.type != "cuda")
    for stack in (whisper.encoder.layers, whisper.decoder.layers):
        convert_to_float8_training(stack, module_filter_fn=frozen_base, config=config)
    return sum(1 for _ in float8_layers(whisper))


def float8_layers(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    from torchao.float8.float8_linear import Float8Linear

    return (m for m in model.modules() if isinstance(m, Float8Linear))


@contextlib.contextmanager
def high_precision(model: torch.nn.Module) -> Iterator[None]:
    """Inside, FP8 layers multiply in their inputs' dtype (every cast disabled): decoding as on a plain base."""
    from torchao.float8.config import CastConfig, ScalingType

    off = CastConfig(scaling_type=ScalingType.DISABLED)
    layers = list(float8_layers(model))
    saved = [layer.config for layer in layers]
    try:
        for layer, config in zip(layers, saved, strict=True):
            layer.config = dataclasses.replace(
                config, **{f.name: off for f in dataclasses.fields(config) if f.name.startswith("cast_config")}
            )
        yield
    finally:
        for layer, config in zip(layers, saved, strict=True):
            layer.config = config
