"""The speed benchmark's modes: each a shipped config (``configs/``) or a measured candidate (``benchmarks/configs/``)
read from its YAML on top of the guide's recipe, plus the overrides that make it a variant. A mode restates no knob
by hand, so a config that changes is measured as it ships."""

import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = "whisper-large-v2-int8-mr"


@functools.cache
def config_file(name: str) -> dict:
    """``configs/NAME.yaml``, else ``benchmarks/configs/NAME.yaml``."""
    for folder in (REPO / "configs", REPO / "benchmarks" / "configs"):
        if (folder / f"{name}.yaml").is_file():
            return yaml.safe_load((folder / f"{name}.yaml").read_text()) or {}
    raise FileNotFoundError(f"no config {name}.yaml in configs/ or benchmarks/configs/")


def _merge(into: dict, overlay: dict) -> dict:
    """``overlay`` over ``into`` as LightningCLI merges a second ``--config``: nested groups key by key."""
    out = dict(into)
    for key, value in overlay.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolved(config: str, overrides: dict[str, object]) -> dict:
    """The recipe, then ``config`` over it, then ``overrides`` (dotted keys: ``data.batch_size``)."""
    merged = _merge(config_file(RECIPE), config_file(config)) if config != RECIPE else config_file(RECIPE)
    for dotted, value in overrides.items():
        *groups, key = dotted.split(".")
        nested: dict = {key: value}
        for group in reversed(groups):
            nested = {group: nested}
        merged = _merge(merged, nested)
    return merged


@dataclass(frozen=True)
class Mode:
    name: str
    tradeoff: str
    base: str = RECIPE  # the YAML it starts from, over the recipe
    overrides: dict[str, object] = field(default_factory=dict)  # dotted knobs over ``base``
    tf32: bool = False  # fp32 matmuls (bitsandbytes' int8 backward) on tensor cores: a process-wide switch, not a knob

    @property
    def config(self) -> str | None:
        """The config this mode measures as shipped; None for a variant."""
        return self.base if not self.overrides and not self.tf32 else None

    @functools.cached_property
    def knobs(self) -> dict:
        return resolved(self.base, self.overrides)

    def _get(self, dotted: str, default: object = None) -> object:
        node: object = self.knobs
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    quantization = property(lambda self: self._get("model.quantization", "int8"))
    gradient_checkpointing = property(lambda self: bool(self._get("model.speed.gradient_checkpointing", True)))
    trim_encoder = property(lambda self: bool(self._get("model.speed.trim_encoder", False)))
    compile = property(lambda self: bool(self._get("model.speed.compile", False)))
    cudnn_attention = property(lambda self: bool(self._get("model.speed.cudnn_attention", False)))
    offload = property(lambda self: bool(self._get("model.speed.offload_encoder", False)))
    fp8 = property(lambda self: bool(self._get("model.speed.fp8", False)))
    frozen_encoder = property(lambda self: not self._get("model.lora.encoder", True))
    precision = property(lambda self: str(self._get("trainer.precision", "32-true")))
    batch_size = property(lambda self: int(self._get("data.batch_size", 8)))
    group = property(lambda self: bool(self._get("data.group_by_length", False)))
    pack_share = property(lambda self: float(self._get("data.pack_share", 0.0)))
    pack_clips = property(lambda self: tuple(self._get("data.pack_clips", (2, 4))))


# One row a mode: a config's name measures it as shipped; overrides make a variant of it.
# fmt: off
MODES = [
    Mode('ours-recipe', "the recipe's settings through our code"),
    Mode('nf4-trim-gc-b8', 'smallest: nf4 base, trimmed encoder, batch 8, length-grouped', base='small-nf4'),
    Mode('nf4-trim-gc-b24', 'recipe-sized memory: nf4, trimmed, length-grouped, batch 24', base='fast-nf4'),
    Mode('nf4-trim-gc-b32', 'nf4, trimmed, length-grouped, batch 32', base='fast-nf4', overrides={'data.batch_size': 32}),
    Mode('bf16-trim-gc-b64-ungrouped', 'bf16 base, trimmed, checkpointing, batch 64, random batches', base='lean-bf16', overrides={'model.speed.compile': False, 'data.batch_size': 64, 'data.group_by_length': False}),
    Mode('bf16-trim-gc-b64', 'consumer GPU: bf16 base, trimmed, checkpointing, length-grouped, batch 64', base='lean-bf16', overrides={'model.speed.compile': False, 'data.batch_size': 64}),
    Mode('bf16-trim-gc-b128', 'bf16 base, trimmed, checkpointing, length-grouped, batch 128', base='fast-bf16', overrides={'model.speed.compile': False, 'model.speed.cudnn_attention': False}),
    Mode('ours-recipe-tf32', "the recipe's settings with TF32 fp32 matmuls", tf32=True),
    Mode('bf16-trim-gc-b16', 'recipe-sized memory: bf16 base, trimmed, checkpointing, length-grouped, batch 16', base='lean-bf16', overrides={'model.speed.compile': False}),
    Mode('bf16-trim-gc-b16-compile', 'bf16-trim-gc-b16 with compiled layers', base='lean-bf16'),
    Mode('bf16-trim-gc-b128-compile', 'bf16-trim-gc-b128 with compiled layers', base='fast-bf16', overrides={'model.speed.cudnn_attention': False}),
    Mode('bf16-trim-gc-b16-compile-cudnn-attention', 'lean-bf16 with cuDNN attention (model.speed.cudnn_attention: true)', base='fast-bf16', overrides={'data.batch_size': 16}),
    Mode('bf16-trim-gc-b128-compile-cudnn-attention', 'fast-bf16: bf16-trim-gc-b128 compiled, with cuDNN attention', base='fast-bf16'),
    Mode('bf16-gc-b32-compile', 'bf16 base, full 30 s windows (default numerics), checkpointing, compiled layers, batch 32', base='frozen-lean-bf16', overrides={'model.lora.encoder': True, 'data.batch_size': 32}),
    Mode('bf16-gc-b32-compile-frozen-encoder', 'bf16-gc-b32-compile with LoRA in the decoder only (model.lora.encoder: false)', base='frozen-lean-bf16', overrides={'data.batch_size': 32}),
    Mode('bf16-b64-compile-frozen-encoder', 'the same without checkpointing, batch 64', base='frozen-lean-bf16', overrides={'model.speed.gradient_checkpointing': False, 'data.batch_size': 64}),
    Mode('bf16-gc-b128-compile-cudnn-frozen-encoder', 'frozen-bf16: decoder-only LoRA, 30 s windows, checkpointing, compiled, cuDNN attention, batch 128', base='frozen-bf16'),
    Mode('bf16-gc-b16-compile-frozen-encoder', 'frozen-lean-bf16: decoder-only LoRA, 30 s windows, checkpointing, compiled, batch 16', base='frozen-lean-bf16'),
    Mode('nf4-gc-b16-frozen-encoder', 'frozen-nf4: nf4 base, decoder-only LoRA, 30 s windows, checkpointing, batch 16', base='frozen-nf4'),
    Mode('ours-recipe-packed', "the recipe's settings, half the clips packed (data.pack_share 0.5)", base='packed'),
    Mode('bf16-gc-b128-compile-cudnn-packed', 'bf16, 30 s windows, checkpointing, compiled, cuDNN attention, batch 128, half the clips packed', base='packed-bf16', overrides={'data.batch_size': 128}),
    Mode('bf16-gc-b32-compile-cudnn-packed', 'packed-bf16: bf16, 30 s windows, checkpointing, compiled, cuDNN attention, batch 32, half the clips packed', base='packed-bf16'),
    Mode('bf16-gc-b64-compile-cudnn-packed', 'packed-bf16 at batch 64', base='packed-bf16', overrides={'data.batch_size': 64}),
    Mode('bf16-gc-b32-compile-cudnn-packed-all', 'packed-all-bf16: packed-bf16 with every clip packed, 2-4 a window', base='packed-all-bf16'),
    Mode('bf16-gc-b32-compile-cudnn-packed-dense', 'packed-dense-bf16: packed-bf16 with three quarters of the clips packed, windows filled (4-8 drawn)', base='packed-dense-bf16'),
    Mode('bf16-gc-b48-compile-cudnn-packed-dense', 'packed-dense-bf16 at batch 48', base='packed-dense-bf16', overrides={'data.batch_size': 48}),
    Mode('bf16-b8-compile-cudnn-packed-dense', 'packed-dense-bf16 at batch 8, no checkpointing', base='packed-dense-bf16', overrides={'model.speed.gradient_checkpointing': False, 'data.batch_size': 8}),
    Mode('bf16-b10-compile-cudnn-packed-dense', 'packed-dense-bf16 at batch 10, no checkpointing', base='packed-dense-bf16', overrides={'model.speed.gradient_checkpointing': False, 'data.batch_size': 10}),
    Mode('bf16-gc-b9-compile-packed-dense', 'packed-dense-lean-bf16: packed-dense-bf16 at batch 9, without cuDNN attention', base='packed-dense-lean-bf16'),
    Mode('bf16-gc-b12-compile-packed-dense', 'packed-dense-bf16 at batch 12, without cuDNN attention', base='packed-dense-lean-bf16', overrides={'data.batch_size': 12}),
    Mode('bf16-gc-b16-compile-packed-dense', 'packed-dense-bf16 at batch 16, without cuDNN attention', base='packed-dense-lean-bf16', overrides={'data.batch_size': 16}),
    Mode('bf16-gc-b16-compile-packed-dense-offload', "packed-dense-lean-bf16 at batch 16, the encoder's saved inputs in host memory", base='packed-dense-offload-bf16', overrides={'data.batch_size': 16}),
    Mode('bf16-gc-b20-compile-packed-dense-offload', "packed-dense-offload-bf16: packed-dense-lean-bf16 at batch 20, the encoder's saved inputs in host memory", base='packed-dense-offload-bf16'),
    Mode('bf16-gc-b32-compile-cudnn-packed-dense-fp8', 'packed-dense-bf16 with FP8 matmuls in the frozen base (torchao)', base='packed-dense-fp8-bf16'),
    Mode('bf16-gc-b20-compile-packed-dense-offload-fp8', 'packed-dense-offload-bf16 with FP8 matmuls in the frozen base (torchao)', base='packed-dense-offload-bf16', overrides={'model.speed.fp8': True}),
    Mode('nf4-gc-b6-packed-dense-offload', "packed-dense-nf4-offload: packed-dense-nf4 at batch 6, the encoder's saved inputs in host memory", base='packed-dense-nf4-offload'),
    Mode('nf4-gc-b6-compile-packed-dense-offload', 'packed-dense-nf4-offload with compiled layers', base='packed-dense-nf4-offload-compile'),
    Mode('nf4-gc-b8-compile-packed-dense-offload', 'packed-dense-nf4-offload-compile at batch 8', base='packed-dense-nf4-offload-compile-b8'),
    Mode('nf4-gc-b10-compile-packed-dense-offload', 'packed-dense-nf4-offload-compile at batch 10', base='packed-dense-nf4-offload-compile-b10'),
    Mode('nf4-gc-b8-packed-dense-offload', "packed-dense-nf4 with the encoder's saved inputs in host memory", base='packed-dense-nf4', overrides={'model.speed.offload_encoder': True}),
    Mode('nf4-gc-b8-packed-dense', 'packed-dense-nf4: nf4 base, 30 s windows, checkpointing, batch 8, dense packing', base='packed-dense-nf4'),
    Mode('nf4-gc-b12-packed-dense', 'nf4 base, 30 s windows, checkpointing, batch 12, dense packing', base='packed-dense-nf4', overrides={'data.batch_size': 12}),
]
# fmt: on
