"""Assembling the model: the base loaded (k-bit or not) and prepared for training, LoRA over it, then the speed
features applied from outside (trimmed encoder, offload, FP8, compiled layers), as LitGPT applies its
``parallelize_fn``. ``WhisperLoRA.configure_model`` calls it; so can export, benchmarks and tests, without a Trainer."""

import logging
import warnings

import bitsandbytes as bnb
import torch
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import WhisperForConditionalGeneration

from lightning_asr.model import fp8
from lightning_asr.model.adapter import adapter_info
from lightning_asr.model.knobs import Speed
from lightning_asr.model.lora import LoRA
from lightning_asr.model.offload import offload_saved_tensors
from lightning_asr.model.spec_augment import SpecAugment
from lightning_asr.model.whisper import Quantization, load_base

log = logging.getLogger(__name__)
# transformers' own deprecation, raised inside peft's prepare_model_for_kbit_training, not by us.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")


def build_model(
    model: str,
    quantization: Quantization,
    device: torch.device,
    *,
    lora: LoRA,
    speed: Speed,
    spec_augment: SpecAugment | None = None,
    adapter: str | None = None,
    dtype: torch.dtype | None = None,
    from_config: bool = False,
    init_seed: int = 0,
) -> PeftModel:
    """The trainable model: ``model``'s base (see :func:`~lightning_asr.model.whisper.load_base` for ``dtype``,
    ``from_config`` and ``init_seed``) with a new LoRA, or ``adapter``'s to train on, in training mode."""
    if speed.compile:
        require_triton(device)
    if adapter:
        adapter_info(adapter)  # a broken adapter folder is named before the base loads
    base = load_base(model, quantization, device, dtype, from_config, init_seed)
    if spec_augment is not None:
        spec_augment.apply(base.config)
    if speed.trim_encoder:
        from lightning_asr.model.trim import enable_trimmed_encoder

        enable_trimmed_encoder(base)
    base = prepare_for_training(base, quantization, speed.gradient_checkpointing)
    if quantization == "nf4":
        keep_4bit_layout_trainable(base)
    if not lora.encoder:  # it runs without autograd: nothing to recompute
        for layer in base.model.encoder.layers:
            layer.gradient_checkpointing = False
    elif speed.offload_encoder:
        offload_saved_tensors(base.model.encoder)
    peft_model = (
        PeftModel.from_pretrained(base, adapter, is_trainable=True) if adapter else get_peft_model(base, lora.config())
    )
    # from_pretrained leaves the base in eval mode, and Lightning keeps each submodule's mode: without this the base
    # never trains as a whole and gradient checkpointing (which only acts in training mode) silently does nothing.
    peft_model.train()
    whisper = peft_model.get_base_model().model
    if speed.fp8:  # before compiling, so that each layer's graph holds torchao's casts
        fp8.require(device)
        log.info(
            "FP8 matrix products in %d frozen linear layers%s",
            fp8.to_float8(whisper, device),
            "" if device.type == "cuda" else " (emulated off a GPU: FP8's rounding, not its speed)",
        )
    if speed.compile:
        compile_layers(whisper, quantization, speed.gradient_checkpointing)
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("trainable params: %s of %s (%.4f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return peft_model


def prepare_for_training(
    base: WhisperForConditionalGeneration, quantization: Quantization, checkpointing: bool
) -> WhisperForConditionalGeneration:
    """The base frozen, with gradient checkpointing where asked and inputs that require grad for it."""
    # bitsandbytes' int8 matmul keeps its input on ``ctx`` rather than through save_for_backward, out of reach of
    # non-reentrant checkpointing: every int8 layer's input then lives until backward (large-v2, batch 8: 20 GiB
    # instead of the guide's 5.4). Reentrant checkpointing runs the forward without autograd, so nothing is kept; it
    # is what the guide's recipe used. (Reentrant checkpoints need inputs that require grad:
    # prepare_model_for_kbit_training hooks the encoder's conv stem and the decoder's embeddings for that, as the
    # guide did by hand.)
    kwargs = {"use_reentrant": quantization == "int8"}
    if quantization != "none":
        return prepare_model_for_kbit_training(base, checkpointing, kwargs)
    for p in base.parameters():
        p.requires_grad_(False)
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        base.enable_input_require_grads()
    return base


def keep_4bit_layout_trainable(base: torch.nn.Module) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight for inference the first time its layer runs in
    eval mode, and packs it back only to save: the packed matmul adds the bias in place, which autograd refuses, so the
    first training step after a validation failed ("a view of a leaf Variable … in-place", bitsandbytes 0.50). Training
    layers keep the trainable layout; a GPU never repacks."""
    for module in base.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def compile_layers(whisper: torch.nn.Module, quantization: Quantization, checkpointing: bool) -> None:
    """``torch.compile`` each encoder and decoder layer: 64 identical blocks share two compiled graphs, and the loss,
    the trimmed encoder's slicing and generate() stay plain Python."""
    if quantization == "nf4":
        # bitsandbytes casts a 4-bit layer's bias to its compute dtype on the first call, through ``.data``, which
        # dynamo cannot trace: the whole layer would run eagerly. Cast them as that first call would.
        for m in whisper.modules():
            if isinstance(m, bnb.nn.Linear4bit) and m.bias is not None and m.compute_dtype is not None:
                m.bias.data = m.bias.data.to(m.compute_dtype)
    layers = (*whisper.encoder.layers, *whisper.decoder.layers)
    for layer in layers:
        layer.compile()
    log.info("%d layers compile as the first batches arrive: the first steps take a minute or more", len(layers))
    lru = getattr(torch._C._dynamo.eval_frame, "_set_lru_cache", None)  # torch >= 2.10
    if checkpointing and lru is not None:
        # Backward recomputes each checkpointed layer and must run the graph its forward ran. Among the cache entries
        # whose guards pass, dynamo runs the most recently used one, which can differ between the two:
        # CheckpointError, "a different number of tensors was saved" (pytorch/pytorch#166926). The first entry
        # inserted is the same for both. Process-wide, as torchtitan sets it.
        lru(False)


def require_triton(device: torch.device) -> None:
    """Raise before the base loads, not minutes later at the first compiled step, where inductor cannot generate
    GPU code."""
    if device.type != "cuda":
        return
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (7, 0):
        raise ValueError(
            f"model.speed.compile: true needs a GPU that Triton supports, compute capability 7.0 or "
            f"newer; {torch.cuda.get_device_name(device)} has {major}.{minor}: set model.speed.compile: false"
        )
