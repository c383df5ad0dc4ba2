"""LoRA: the adapter's config, which weights train, and merging it into the base (for a
validation pass, or for good at export)."""

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora import LoraLayer

ENCODER_MODULES = {"conv1", "conv2", "embed_positions"}  # the encoder's own layers that modules_to_save may name


@dataclass
class LoRA:
    """The adapter: PEFT's ``LoraConfig`` knobs, as ``model.lora.*``.

    Args:
        r: rank: adapter capacity; parameters grow linearly with it.
        alpha: scale numerator (the update is scaled by alpha / r).
        dropout: dropout on the LoRA branch input.
        target_modules: names of the linear layers that get adapters.
        bias: which biases train: ``none``, ``all`` or ``lora_only``.
        modules_to_save: layers trained in full and saved with the adapter (PEFT's
            ``modules_to_save``); empty for the guide's recipe.
        encoder: adapt the encoder's layers too (the guide's recipe). ``false``: LoRA in the decoder
            only, and the encoder runs without gradients in training (no backward or recompute
            through it): faster, at a WER cost that benchmarks/quality.py measures.
        rslora: scale the update by alpha / sqrt(r) instead of alpha / r (rsLoRA, PEFT's ``use_rslora``): a
            larger update at the same learning rate, one that keeps its size as the rank grows.
        dora: weight-decomposed LoRA (DoRA, PEFT's ``use_dora``): a trained magnitude per output feature beside
            the low-rank direction; more accuracy per rank in its paper, a slower step and more memory. Needs an
            unquantized base (``quantization: none``).
        loraplus_ratio: learning rate of the B matrices over ``model.learning_rate`` (LoRA+, PEFT's
            ``create_loraplus_optimizer``; its paper uses 16): B starts at zero and moves faster; 1
            trains A and B alike (the guide).
    """

    r: int = 32
    alpha: int = 64
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] = field(default_factory=list)
    encoder: bool = True
    rslora: bool = False
    dora: bool = False
    loraplus_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.loraplus_ratio <= 0:
            raise ValueError(
                f"model.lora.loraplus_ratio: B's learning rate over A's, above 0 (1: alike); got {self.loraplus_ratio:g}"
            )
        if not self.encoder and set(self.modules_to_save) & ENCODER_MODULES:
            raise ValueError(
                f"model.lora.modules_to_save: {sorted(set(self.modules_to_save) & ENCODER_MODULES)} are "
                "encoder layers, which model.lora.encoder: false keeps frozen"
            )

    def config(self) -> LoraConfig:
        targets: list[str] | str = list(self.target_modules)
        if not self.encoder:  # PEFT matches a string in full against each module's name: none under the encoder
            targets = rf"(?!(.*\.)?encoder\.)(.*\.)?({'|'.join(map(re.escape, targets))})"
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            bias=self.bias,
            modules_to_save=list(self.modules_to_save) or None,
            use_rslora=self.rslora,
            use_dora=self.dora,
        )


def trainable_state(module: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` that train (LoRA, and any ``modules_to_save``): a checkpoint
    needs nothing else, the frozen base is rebuilt from its source."""
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state_dict.items() if k in trainable}


@contextlib.contextmanager
def merged(model: PeftModel, enabled: bool = True) -> Iterator[None]:
    """``model`` with its LoRA update merged into the base weights, then the base's exact weights back.

    PEFT's own ``unmerge_adapter`` subtracts the update again, which in bf16 does not give the same
    weights back: repeated validations would drift the frozen base. So the weights are copied first.
    """
    if not enabled:
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    saved = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for layer, weight in zip(layers, saved):
                layer.get_base_layer().weight.copy_(weight)


def merge(model: PeftModel) -> torch.nn.Module:
    """Fold the adapter into the base weights; refuses a quantized base."""
    import bitsandbytes as bnb

    quantized = [n for n, m in model.named_modules() if isinstance(m, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))]
    if quantized:
        raise ValueError(
            f"the base is quantized ({quantized[0]} and {len(quantized) - 1} more layers): merging would round the "
            "adapter into k-bit weights. Load the base unquantized (lightning-asr export does) and merge there."
        )
    return model.merge_and_unload()
