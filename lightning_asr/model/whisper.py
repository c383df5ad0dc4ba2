"""Loading Whisper: processor, base model (k-bit or not) and its generation config; its training cost."""

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch
from transformers import (
    BitsAndBytesConfig,
    GenerationConfig,
    WhisperConfig,
    WhisperForConditionalGeneration,
    WhisperProcessor,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

log = logging.getLogger(__name__)

Quantization = Literal["int8", "nf4", "none"]
GENERATION_KEYS = ("lang_to_id", "task_to_id", "is_multilingual", "no_timestamps_token_id")


def language_code(language: str, field: str = "language") -> str:
    """``Marathi``, ``marathi`` or ``mr`` -> ``mr``; anything else is a clear error naming ``field``."""
    key = language.strip().lower().strip("<|>")
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise ValueError(
        f"{field}: {language!r} is not a language Whisper knows; use a name or code such as "
        f"'Marathi'/'mr' (all: {', '.join(sorted(LANGUAGES))})"
    )


def resolve_model(model: str) -> str:
    """A local model folder as an absolute path; a hub id (``owner/name``) as it is.

    A name that can only be a path (absolute, ``./``, ``~``, or with more or fewer than one ``/``)
    and is not a folder is an error here, instead of a slow, failing hub look-up.
    """
    folder = Path(model).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    if model.startswith(("/", ".", "~")) or model.count("/") != 1 or folder.exists():
        raise FileNotFoundError(f"model folder not found: {model} (a hub id has the form 'openai/whisper-base')")
    return model


def max_target_positions(model: str) -> int:
    """The decoder's positions (prompt and transcript together): labels longer are skipped, decoding stops there."""
    try:
        return WhisperConfig.from_pretrained(model).max_target_positions
    except OSError:  # a processor-only folder: Whisper's own limit
        return 448


def load_processor(model: str, language: str | None, task: str) -> WhisperProcessor:
    """Tokenizer + feature extractor whose label prefix is ``<|sot|><|lang|><|task|><|notimestamps|>``.
    ``language`` ``None`` (detected per clip) puts English there as a placeholder: decoding always
    names its language, and the prefix keeps its four tokens."""
    code = language_code(language or "en")
    processor = WhisperProcessor.from_pretrained(resolve_model(model), language=LANGUAGES[code], task=task)
    if f"<|{code}|>" not in processor.tokenizer.get_vocab():
        # transformers' language list is the newest checkpoint's: an older tokenizer would map the missing token to
        # <|endoftext|> and build a prefix without a language (Cantonese came with large-v3).
        raise ValueError(
            f"language: {LANGUAGES[code]} ({code}) is not a language of {model}: its tokenizer has no <|{code}|> token; "
            "choose a checkpoint that has it (Cantonese: whisper-large-v3 or later) or another language"
        )
    return processor


def quantization_config(quantization: Quantization) -> BitsAndBytesConfig | None:
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    if quantization == "none":
        return None
    raise ValueError(f"model.quantization: {quantization!r} is not one of int8, nf4, none")


def check_generation_config(config: GenerationConfig, source: str) -> None:
    missing = [k for k in GENERATION_KEYS if getattr(config, k, None) is None]
    if missing:
        raise ValueError(
            f"{source}: its generation config lacks {', '.join(missing)}, so generate(language=...) would refuse "
            "('generation config is outdated'). Copy generation_config.json from the matching openai/whisper-* "
            "checkpoint (same vocabulary) into the model folder, or pass a folder that has one."
        )


def load_base(
    model: str,
    quantization: Quantization = "int8",
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    from_config: bool = False,
    seed: int = 0,
) -> WhisperForConditionalGeneration:
    """The frozen base, quantized on load and placed on this process's own ``device``.

    ``device_map`` names one device, never ``"auto"``, so every DDP rank loads its own copy.
    ``from_config`` builds random weights from ``model``'s ``config.json`` (seeded, so the same base
    comes back for evaluation) and then loads them through the same quantizing ``from_pretrained``.
    """
    if dtype is None:
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    tmp = None
    source = model = resolve_model(model)
    if from_config:
        tmp = tempfile.mkdtemp(prefix="lightning-asr-random-")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random_model = WhisperForConditionalGeneration(WhisperConfig.from_pretrained(model))
        # Every rank writes its own private copy: transformers' save_pretrained writes on rank 0 only.
        random_model.to(dtype)
        random_model.config.save_pretrained(tmp)
        GenerationConfig.from_pretrained(model).save_pretrained(tmp)
        safetensors.torch.save_model(random_model, f"{tmp}/model.safetensors", metadata={"format": "pt"})
        del random_model
        source = tmp
    try:
        base = WhisperForConditionalGeneration.from_pretrained(
            source,
            quantization_config=quantization_config(quantization),
            device_map={"": torch.device(device)},
            dtype=dtype,
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    check_generation_config(base.generation_config, model)
    # As in the guide: let generate() take language/task from its arguments, and suppress nothing.
    base.generation_config.forced_decoder_ids = None
    base.generation_config.suppress_tokens = []
    base.config.use_cache = False
    return base


def train_flops(
    config: WhisperConfig, features_shape: torch.Size, label_tokens: int, encoder_backward: bool = True
) -> int:
    """Model FLOPs of one training step by the 6·N·tokens rule (attention scores left out).

    Encoder parameters see the mel frames / 2 positions, decoder parameters the label tokens.
    ``encoder_backward=False`` (``lora.encoder: false``): the encoder runs forward only, 2·N.
    """
    batch, _, frames = features_shape
    d, ffn = config.d_model, config.encoder_ffn_dim
    enc = config.encoder_layers * (4 * d * d + 2 * d * ffn)
    dec = config.decoder_layers * (8 * d * d + 2 * d * config.decoder_ffn_dim) + d * config.vocab_size
    return batch * ((6 if encoder_backward else 2) * enc * (frames // 2) + 6 * dec * label_tokens)
