"""``lightning-asr transcribe`` and ``lightning-asr export``: using a trained adapter."""

import json
import logging
import tempfile
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from peft import PeftModel

from lightning_asr.data import SpeechDataModule
from lightning_asr.module import WhisperLoRA
from lightning_asr.whisper import Quantization, load_base, load_processor

log = logging.getLogger(__name__)
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")


def adapter_info(adapter: str) -> dict:
    """What an adapter folder says about its training (base, language, task, quantization)."""
    folder = Path(adapter)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter}: not an adapter folder (no adapter_config.json)")
    info_file = folder / "lightning_asr.json"
    if info_file.is_file():
        return json.loads(info_file.read_text())
    config = json.loads((folder / "adapter_config.json").read_text())
    return {"base_model": config.get("base_model_name_or_path")}


class TranscriptWriter(BasePredictionWriter):
    """Appends each batch's transcripts to ``<output>.txt`` (one line a clip) and ``<output>.jsonl``.

    Args:
        output: path without suffix; under several processes each rank writes its own ``.rankN`` files.
    """

    def __init__(self, output: str = "transcripts") -> None:
        super().__init__(write_interval="batch")
        self.output = output

    def _paths(self, trainer: L.Trainer) -> tuple[Path, Path]:
        stem = self.output + (f".rank{trainer.global_rank}" if trainer.world_size > 1 else "")
        return Path(stem + ".txt"), Path(stem + ".jsonl")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for path in self._paths(trainer):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        txt, jsonl = self._paths(trainer)
        with open(txt, "a") as t, open(jsonl, "a") as j:
            for row in prediction:
                t.write(row["text"] + "\n")
                j.write(json.dumps(row, ensure_ascii=False) + "\n")


def transcribe(
    inputs: list[str],
    adapter: str | None = None,
    output: str = "transcripts",
    base: str | None = None,
    language: str | None = None,
    task: Literal["transcribe", "translate"] | None = None,
    quantization: Quantization | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    num_workers: int = 2,
    accelerator: str = "auto",
    audio_column: str = "audio",
    decoding: Literal["generate", "static"] = "generate",
) -> None:
    """Transcribe audio files with a base Whisper and (optionally) a trained adapter.

    Args:
        inputs: audio files (mp3/wav/flac/ogg), or one manifest (.csv/.tsv/.jsonl) with an audio column.
        adapter: adapter folder written by training; its base, language, task and quantization are
            used unless given here.
        output: where to write ``<output>.txt`` and ``<output>.jsonl`` (path, text, duration).
        base: base model id or folder (default: the adapter's).
        language: transcript language (default: the adapter's).
        task: ``transcribe`` or ``translate`` (default: the adapter's, else ``transcribe``).
        quantization: how to load the base (default: as trained).
        batch_size: clips decoded together.
        max_new_tokens: longest transcript in tokens.
        num_workers: audio decoding processes.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        audio_column: audio column of a manifest.
        decoding: ``generate`` (transformers) or ``static`` (the same tokens from our loop over a
            preallocated cache; on GPU with an unquantized base, 2.5x faster in README "Speed").
    """
    info = adapter_info(adapter) if adapter else {}
    base = base or info.get("base_model")
    if not base:
        raise ValueError("transcribe: give --base (no adapter, or the adapter does not name its base)")
    language = language or info.get("language")
    if not language:
        raise ValueError("transcribe: give --language (the adapter does not record one)")
    module = WhisperLoRA(
        model=base,
        language=language,
        task=task or info.get("task", "transcribe"),
        quantization=quantization or info.get("quantization", "none"),
        from_config=info.get("from_config", False),
        init_seed=info.get("init_seed", 0),
        adapter=adapter,
        max_new_tokens=max_new_tokens,
        trim_encoder=False,
        decoding=decoding,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if len(inputs) == 1 and inputs[0].endswith(MANIFEST_SUFFIXES):
            manifest = inputs[0]
        else:
            manifest = str(Path(tmp) / "inputs.jsonl")
            with open(manifest, "w") as f:
                for path in inputs:
                    f.write(json.dumps({audio_column: str(Path(path).resolve())}) + "\n")
        data = SpeechDataModule(
            source="manifest",
            path=manifest,
            model=base,
            language=language,
            task=module.hparams.task,
            eval_batch_size=batch_size,
            num_workers=num_workers,
            audio_column=audio_column,
            text_column=None,
        )
        trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, callbacks=[TranscriptWriter(output)])
        trainer.predict(module, datamodule=data, return_predictions=False)
    print(f"wrote {output}.txt and {output}.jsonl", flush=True)


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


def export(
    adapter: str,
    output: str,
    base: str | None = None,
    dtype: Literal["float16", "bfloat16", "float32"] = "float16",
) -> None:
    """Merge an adapter into a full-precision copy of its base and save a standard Whisper folder.

    The folder (model, processor, generation config) loads with
    ``pipeline("automatic-speech-recognition", model=output)`` and converts for faster-whisper with
    ``ct2-transformers-converter --model OUTPUT --output_dir OUTPUT-ct2 --quantization int8_float16``.

    Args:
        adapter: adapter folder written by training.
        output: folder to write.
        base: base model id or folder (default: the one the adapter was trained on).
        dtype: weight dtype of the exported model.
    """
    info = adapter_info(adapter)
    base = base or info.get("base_model")
    if not base:
        raise ValueError("export: give --base (the adapter does not name its base)")
    model = load_base(
        base, "none", "cpu", getattr(torch, dtype), info.get("from_config", False), info.get("init_seed", 0)
    )
    merged = merge(PeftModel.from_pretrained(model, adapter))
    merged.config.use_cache = True
    merged.save_pretrained(output)
    language = info.get("language")
    processor = load_processor(adapter, language, info.get("task", "transcribe")) if language else None
    (processor or load_processor(base, "en", "transcribe")).save_pretrained(output)
    print(f"exported {base} + {adapter} -> {output}", flush=True)
