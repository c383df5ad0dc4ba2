"""The model's grouped knobs (``model.decoding.*``, ``model.speed.*``): typed dataclasses that
LightningCLI renders as nested YAML. LoRA's and SpecAugment's live beside their code (``lora.py``,
``augment.py``)."""

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclass
class Decoding:
    """How validation, test and predict decode; greedy either way.

    Args:
        method: ``generate`` is transformers' ``generate()``; ``static`` is our loop over a
            preallocated KV cache (``decode.py``), its token step replayed as a CUDA graph on GPU
            (``cuda_graph``). The same tokens in fp32; faster with bf16 and nf4 bases, slower with
            int8 (benchmarks/README.md, "Speed").
        max_new_tokens: generation cap; a prediction that hits it counts as degenerate. 128 holds a
            Common Voice sentence (the longest in cv-synth/mr's test split is 116 Whisper tokens, ~8 a
            Marathi word); ``transcribe`` defaults to the whole window instead.
        merge_lora: decode with the LoRA update merged into the base weights (``quantization: none``
            only): no LoRA branch kernels in any token step, at one bf16 rounding of W + BA. The
            base's exact weights come back after every batch, from a copy of the adapted layers'
            weights (630 MB for large-v2 with q/v adapters).
        cuda_graph: with ``method: static`` on a GPU, capture one token step as a CUDA graph and replay
            it for every token (bf16 and nf4 bases; int8's outlier split picks its columns from the
            data each step, so an int8 base always runs eagerly). ``false`` runs every step eagerly:
            the same tokens, for debugging.
    """

    method: Literal["generate", "static"] = "generate"
    max_new_tokens: int = 128
    merge_lora: bool = False
    cuda_graph: bool = True


@dataclass
class Speed:
    """Speed and memory against exact numerics; the defaults are the guide's recipe.

    Args:
        gradient_checkpointing: recompute activations in backward, and the loss's logits a chunk of
            tokens at a time (`loss.py`): less memory, ~30 % slower.
        trim_encoder: run the encoder over the batch's real length instead of a 30 s window
            (``data.trim_encoder`` follows): much faster on short clips, costs WER (docs/results.md).
        compile: ``torch.compile`` each encoder and decoder layer for training (``quantization:
            none`` or ``nf4``; int8's outlier split has data-dependent shapes; on a GPU, compute capability
            7.0 or newer, which Triton needs): fuses the elementwise
            work between matmuls, which pays most where a step is host-bound (nf4's many kernels). Layers compile at the first batch shape, again when the
            label length first changes (then it is dynamic) and, on a GPU, once more for a length not a multiple of 8:
            the first steps are slower. Decoding stays eager. With checkpointing, dynamo runs the
            first matching compiled graph, not the latest, process-wide (the recompute must run the forward's).
        cudnn_attention: let attention use cuDNN's kernels: fastest when the GPU is the limit, but
            cuDNN plans every new input shape, which costs host time when batch lengths vary
            (benchmarks/README.md, "Speed"). Off, attention runs on the flash / memory-efficient kernels.
        offload_encoder: keep what the encoder saves for backward in pinned CPU memory until backward
            (``offload.py``); with checkpointing that is each layer's input, copied out and back once a step. For a bigger batch in the same GPU memory; no
            effect on CPU or with ``lora.encoder: false``.
        fp8: multiply in FP8 in the frozen base's linear layers while training (``quantization: none``;
            torchao, ``pip install 'lightning-asr[fp8]'``; a GPU with FP8 tensor cores, Ada or Hopper):
            forward and input gradients in e4m3/e5m2 with per-tensor scales (``fp8.py``). Changes
            numerics; decoding stays in the base's dtype. Off a GPU it is emulated (numerics, no speed).
            Scaling each activation costs much of what the FP8 matmuls save (benchmarks/README.md).
    """

    gradient_checkpointing: bool = True
    trim_encoder: bool = False
    compile: bool = False
    cudnn_attention: bool = False
    offload_encoder: bool = False
    fp8: bool = False


def as_dict(knobs: Any) -> dict:
    """A dataclass of knobs (or the dict a checkpoint's hparams hold) as a plain dict: hparams keep
    dicts, which a checkpoint loads without unpickling a class."""
    return dataclasses.asdict(knobs) if dataclasses.is_dataclass(knobs) else dict(knobs)


def check_knobs(quantization: str, lora: Any, decoding: Decoding, speed: Speed) -> None:
    """The model's knobs against each other (``lora`` is a :class:`~lightning_asr.model.lora.LoRA`): a combination that cannot
    work is an error naming both fields, one that does nothing useful a warning; at parse time, before any model loads."""
    if speed.compile and quantization == "int8":
        raise ValueError(
            "model.speed.compile: true needs model.quantization: none or nf4 (got 'int8'): int8's "
            "outlier split picks its columns from each input, a data-dependent shape in every matmul"
        )
    if speed.fp8 and quantization != "none":
        raise ValueError(
            f"model.speed.fp8: true needs model.quantization: none (got {quantization!r}): FP8 "
            "matrix products take the base's own bf16 weights, a k-bit base has none"
        )
    if decoding.merge_lora and quantization != "none":
        raise ValueError(
            f"model.decoding.merge_lora: true needs model.quantization: none (got {quantization!r}): "
            "a LoRA update cannot be merged into k-bit weights without requantizing them"
        )
    if lora.dora and quantization != "none":
        raise ValueError(
            f"model.lora.dora: true needs model.quantization: none (got {quantization!r}): on a k-bit base peft's "
            "DoRA broke int8 training and its nf4 adapter did not reload to the same outputs (peft 0.21)"
        )
    if speed.offload_encoder and not lora.encoder:
        log.warning(
            "model.speed.offload_encoder does nothing with model.lora.encoder: false (the encoder runs "
            "without autograd and saves nothing for backward)"
        )
    elif speed.offload_encoder and not speed.gradient_checkpointing:
        log.warning(
            "model.speed.offload_encoder without model.speed.gradient_checkpointing copies every activation "
            "of every encoder layer to host memory and back each step, not just each layer's input: "
            "slow, and most of the host RAM it pins is not needed with checkpointing on"
        )
