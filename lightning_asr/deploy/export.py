"""``lightning-asr export``: an adapter merged into its base, as a transformers folder or a
CTranslate2 model for faster-whisper, and the parity check that the exported model, in its own
runtime, scores what the adapter scored in validation.

Fine-tunes are known to score differently once merged or converted (other decoding defaults, other
feature code, int8 weights, a tokenizer that did not travel): the check decodes the same clips
both ways and fails past a tolerance, so that a difference is found before deployment.
"""

import importlib.util
import json
import logging
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from peft import PeftModel
from tqdm import tqdm

from lightning_asr.batch import SAMPLING_RATE
from lightning_asr.data import SpeechDataModule
from lightning_asr.data.audio import AudioError, clip_name, read_clip
from lightning_asr.deploy.transcribe import decoder_module
from lightning_asr.model.adapter import adapter_info
from lightning_asr.model.lora import merge
from lightning_asr.model.metrics import error_rates
from lightning_asr.model.module import WhisperLoRA
from lightning_asr.model.whisper import Quantization, language_code, load_base, load_processor

log = logging.getLogger(__name__)
Format = Literal["transformers", "ct2"]
# CTranslate2's weight types (``compute_type`` in faster-whisper): int8 weights with fp16 activations
# on GPU is faster-whisper's usual choice; ``int8`` / ``float32`` for CPU.
CT2Quantization = Literal["int8_float16", "int8_bfloat16", "int8_float32", "int8", "float16", "bfloat16", "float32"]
# faster-whisper reads its tokenizer and feature settings from the model folder (else from the hub).
CT2_FILES = ["tokenizer.json", "preprocessor_config.json"]


def export(
    adapter: str,
    output: str,
    base: str | None = None,
    format: Format = "transformers",
    quantization: CT2Quantization = "float16",
    dtype: Literal["float16", "bfloat16", "float32"] = "float16",
    overwrite: bool = False,
    check: str | None = None,
    check_split: str = "test",
    check_limit: int | None = None,
    tolerance: float = 1.0,
    check_quantization: Quantization | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    num_workers: int = 2,
    accelerator: str = "auto",
) -> int:
    """Merge an adapter into a full-precision copy of its base and save it for deployment.

    ``--format transformers``: a standard Whisper folder (model, processor, generation config) that
    loads with ``pipeline("automatic-speech-recognition", model=OUTPUT)``. ``--format ct2``: a
    CTranslate2 model for ``faster_whisper.WhisperModel(OUTPUT)`` (``pip install "lightning-asr[ct2]"``).
    With ``--check DATA`` the exported model then transcribes DATA's ``check_split`` in its own
    runtime (faster-whisper, or the transformers pipeline) and the adapter does the same through
    this package's validation; the command fails (exit 1) when WER or normalised WER differ by more
    than ``tolerance`` points. The comparison is written to ``OUTPUT/parity.json``.

    Args:
        adapter: adapter folder written by training.
        output: folder to write.
        base: base model id or folder (default: the one the adapter was trained on).
        format: ``transformers`` or ``ct2`` (CTranslate2, for faster-whisper).
        quantization: CTranslate2 weight type (``ct2`` only): ``float16`` (the default) or ``int8_float16``
            for GPUs, ``int8`` or ``float32`` for CPUs. int8 weights cost WER on some languages: ``--check`` says whether
            yours stays within its bound.
        dtype: weight dtype of the merged model (the transformers folder's; ``ct2`` converts from it).
        overwrite: write into ``output`` even when it already holds files.
        check: a Common Voice locale folder (holding ``<split>.tsv``) or a manifest (.csv/.tsv/.jsonl with
            ``audio`` and ``text`` columns) to run the parity check on.
        check_split: the split of a Common Voice folder to check on (``data.val_split``'s default).
        check_limit: check only the first N clips.
        tolerance: the largest WER difference, in points, that passes.
        check_quantization: how the adapter's side loads the base (default: as trained, the model
            that validation scored; ``none`` compares with an unquantized base instead).
        max_new_tokens: longest transcript, on both sides of the check.
        batch_size: clips decoded together (the adapter's side and the transformers pipeline).
        num_workers: audio decoding processes for the adapter's side.
        accelerator: ``auto``, ``cpu`` or ``gpu``, for both sides.
    """
    target, info = Path(output), adapter_info(adapter)
    base = base or info.get("base_model")
    _check_arguments(target, overwrite, tolerance, format, base, check)
    if format == "transformers":
        _save_merged(adapter, info, base, dtype, target)
    else:
        with tempfile.TemporaryDirectory(prefix="lightning-asr-export-") as tmp:
            _save_merged(adapter, info, base, dtype, Path(tmp))
            _convert_ct2(Path(tmp), target, quantization)
    print(
        f"exported {base} + {adapter} -> {output} ({format}{f', {quantization}' if format == 'ct2' else ''})",
        flush=True,
    )
    if check is None:
        return 0
    report = parity(
        adapter,
        output,
        format,
        check,
        base=base,
        split=check_split,
        limit=check_limit,
        tolerance=tolerance,
        quantization=check_quantization,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        num_workers=num_workers,
        accelerator=accelerator,
        compute_type=quantization,
    )
    (target / "parity.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(parity_table(report), flush=True)
    return 0 if report["within_tolerance"] else 1


def _check_arguments(
    target: Path, overwrite: bool, tolerance: float, format: str, base: str | None, check: str | None
) -> None:
    """Every argument that can be wrong, before minutes of loading and merging: one line naming it."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"export: {target} is a file, not a folder; choose another output folder")
    if target.exists() and not overwrite and any(target.iterdir()):
        raise FileExistsError(f"export: {target} already holds files; choose another folder or pass --overwrite true")
    if tolerance < 0:
        raise ValueError(f"export: --tolerance is a number of WER points, 0 or more; got {tolerance:g}")
    if format == "ct2":
        _require_ct2()
    if not base:
        raise ValueError("export: give --base (the adapter does not name its base)")
    if check is not None and not Path(check).exists():
        raise FileNotFoundError(f"export: --check {check}: no such folder or manifest")


def _require_ct2() -> None:
    missing = [name for name in ("ctranslate2", "faster_whisper") if not _importable(name)]
    if missing:
        raise ValueError(f'export --format ct2 needs {" and ".join(missing)}: pip install "lightning-asr[ct2]"')


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _save_merged(adapter: str, info: dict, base: str, dtype: str, folder: Path) -> None:
    model = load_base(
        base, "none", "cpu", getattr(torch, dtype), info.get("from_config", False), info.get("init_seed", 0)
    )
    merged = merge(PeftModel.from_pretrained(model, adapter))
    merged.config.use_cache = True
    language = info.get("language")
    # The exported model decodes as validation did, without arguments (the README's pipeline line passes none):
    # in the adapter's language and task, greedily (transformers 5's pipeline otherwise searches 5 beams, and
    # without a language loops on some clips: "Americans Americans …" to the token limit).
    generation = merged.generation_config
    generation.language = language_code(language) if language else None
    generation.task = info.get("task", "transcribe") if language else None
    generation.num_beams = 1
    merged.save_pretrained(folder)
    processor = load_processor(adapter, language, info.get("task", "transcribe")) if language else None
    processor = processor or load_processor(base, "en", "transcribe")
    processor.save_pretrained(folder)
    # transformers 5 folds the feature settings into processor_config.json; faster-whisper (and
    # older transformers) read them from preprocessor_config.json.
    processor.feature_extractor.save_pretrained(folder)


def _convert_ct2(merged: Path, output: Path, quantization: str) -> None:
    from ctranslate2.converters import TransformersConverter

    missing = [name for name in CT2_FILES if not (merged / name).is_file()]
    if missing:  # faster-whisper would fetch them from the hub, or fail offline
        raise ValueError(
            f"export: the merged model lacks {', '.join(missing)}, which faster-whisper needs beside the weights"
        )
    # The merged folder holds the weights in the chosen dtype; CTranslate2 quantizes from there. ``force``:
    # export() has already refused a non-empty folder unless --overwrite.
    TransformersConverter(str(merged), copy_files=CT2_FILES).convert(str(output), quantization=quantization, force=True)


def parity(
    adapter: str,
    exported: str,
    format: Format,
    data: str,
    base: str | None = None,
    split: str = "test",
    limit: int | None = None,
    tolerance: float = 1.0,
    quantization: Quantization | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    num_workers: int = 2,
    accelerator: str = "auto",
    compute_type: str = "float16",
) -> dict:
    """The adapter's WER through this package's validation decode and the exported model's in its
    own runtime, on the same clips of ``data``, scored by the same routine."""
    module = decoder_module(adapter, base, None, None, quantization, max_new_tokens, "generate")
    if module.language is None:
        raise ValueError(f"export --check: {adapter} records no language; the check needs the transcripts' language")
    rows, index = _adapter_side(module, data, split, limit, batch_size, num_workers, accelerator)
    if not rows:
        raise ValueError(f"export --check: {data} ({split}) has no usable labelled clips")
    waveforms = _waveforms(index, {name for name, _, _ in rows})
    rows = [row for row in rows if row[0] in waveforms]  # a file changed since cannot be compared
    names, refs, ours = map(list, zip(*rows))
    code, task = module.language, module.hparams.task
    device = "cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    if format == "ct2":
        theirs, runtime = _faster_whisper(
            exported, [waveforms[n] for n in names], code, task, max_new_tokens, device, compute_type
        )
    else:
        theirs, runtime = _pipeline(exported, [waveforms[n] for n in names], max_new_tokens, device, batch_size)
    ours_scores, theirs_scores = error_rates(refs, ours, code), error_rates(refs, theirs, code)
    delta = {k: 100 * (theirs_scores[k] - ours_scores[k]) for k in ("wer", "wer_norm")}
    differ = [(n, r, o, t) for n, r, o, t in zip(names, refs, ours, theirs) if o.strip() != t.strip()]
    return {
        "data": str(data),
        "split": split,
        "clips": len(names),
        "language": code,
        "adapter": str(adapter),
        "exported": str(exported),
        "format": format,
        "runtime": runtime,
        "adapter_scores": ours_scores,
        "exported_scores": theirs_scores,
        "delta_points": delta,
        "tolerance_points": tolerance,
        "within_tolerance": all(abs(d) <= tolerance for d in delta.values()),
        "clips_transcribed_differently": len(differ),
        "differences": [dict(zip(("clip", "reference", "adapter", "exported"), d)) for d in differ[:10]],
    }


def _adapter_side(
    module: WhisperLoRA, data: str, split: str, limit: int | None, batch_size: int, num_workers: int, accelerator: str
) -> tuple[list[tuple[str, str, str]], Any]:
    """(clip, reference, prediction) of the adapter on ``data``'s split, by ``trainer.test`` (the decode
    and metrics of validation), and the split's index rows."""
    manifest = Path(data).is_file()
    dm = SpeechDataModule(
        source="manifest" if manifest else "common_voice",
        path=str(data),
        test_split=split,
        model=module.hparams.model,
        language=module.language,
        task=module.hparams.task,
        eval_batch_size=batch_size,
        num_workers=num_workers,
        max_samples=limit,
        processor=module.processor,
    )
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_model_summary=False)
    trainer.test(module, datamodule=dm, verbose=False)
    return list(module.test_transcripts), dm.datasets["test"].rows


def _waveforms(rows: Any, names: set[str]) -> dict:
    """16 kHz audio of the clips the adapter's side scored, read by the same reader."""
    out = {}
    for cell in rows["audio"].to_pylist():
        name = clip_name(cell)
        if name in names and name not in out:
            try:
                out[name] = read_clip(cell, name)
            except AudioError:  # unreachable for a clip the adapter's side read; kept for a file changed since
                log.warning("export --check: %s could not be read again", name)
    return out


def whisper_window(waveform: np.ndarray, seconds: float = 30.0) -> np.ndarray:
    """``waveform`` zero-padded to Whisper's window, as faster-whisper should be given a clip.

    faster-whisper pads a short clip's log-mel with zeros, not with the log-mel of silence that
    Whisper, transformers and our training compute over zero-padded audio. A fine-tune transcribes
    that input differently: on an H200, 5 of 300 digit clips changed word and Marathi moved +6.6
    points, back to +0.0 and +0.3 once padded (benchmarks/README.md, "Export parity"). Audio at
    least a window long is returned as it is.
    """
    return np.pad(waveform, (0, max(0, round(seconds * SAMPLING_RATE) - len(waveform))))


def _faster_whisper(
    folder: str, waveforms: list, language: str, task: str, max_new_tokens: int, device: str, compute_type: str
) -> tuple[list[str], str]:
    """Greedy, no timestamps, no fallback, no VAD: the decode validation does, in faster-whisper."""
    from faster_whisper import WhisperModel

    window = json.loads((Path(folder) / "config.json").read_text()).get("max_source_positions", 1500)
    if window != 1500:  # it pads every input to 3,000 mel frames
        raise ValueError(
            f"export --check: faster-whisper decodes 30 s windows only; {folder} has a "
            f"{window / 50:g} s window (max_source_positions {window})"
        )
    if device == "cpu" and "float16" in compute_type:
        compute_type = "int8" if compute_type.startswith("int8") else "float32"  # CPUs lack fp16 kernels
    model = WhisperModel(folder, device=device, compute_type=compute_type)
    # CTranslate2 stops a window at min(total / 2, total - prompt) tokens, total = prompt (4) + max_new_tokens
    # (its issue #1856, Whisper's reference sample_len): the same budget as ours needs 2N - 4.
    budget = 2 * max_new_tokens - 4
    if budget + 4 > 448:
        raise ValueError(
            f"export --check: faster-whisper decodes at most 224 tokens a window; --max_new_tokens {max_new_tokens} is more"
        )
    texts = []
    for waveform in tqdm(waveforms, desc="faster-whisper", unit="clip"):
        segments, _ = model.transcribe(
            whisper_window(waveform),
            language=language,
            task=task,
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            no_speech_threshold=None,
            max_new_tokens=budget,
        )
        texts.append("".join(s.text for s in segments).strip())
    runtime = f"faster-whisper {metadata.version('faster-whisper')} (CTranslate2 {metadata.version('ctranslate2')}), {compute_type}, {device}"
    return texts, runtime


def _pipeline(folder: str, waveforms: list, max_new_tokens: int, device: str, batch_size: int) -> tuple[list[str], str]:
    """transformers' ASR pipeline on the exported folder, as users load it (the README's line)."""
    from transformers import pipeline

    dtype = torch.float32 if device == "cpu" else None  # the folder's own dtype on GPU
    asr = pipeline("automatic-speech-recognition", model=folder, device=device, dtype=dtype)
    inputs = [{"raw": w, "sampling_rate": 16_000} for w in waveforms]
    # As the README's line loads it: language, task and greedy search come from the folder's generation config.
    kwargs = {"max_new_tokens": max_new_tokens}
    texts = [
        out["text"].strip()
        for out in tqdm(
            asr(inputs, batch_size=batch_size, generate_kwargs=kwargs), total=len(inputs), desc="pipeline", unit="clip"
        )
    ]
    import transformers

    return texts, f"transformers {transformers.__version__} pipeline, {asr.model.dtype}, {device}"


def parity_table(report: dict) -> str:
    a, e, d = report["adapter_scores"], report["exported_scores"], report["delta_points"]
    verdict = "within" if report["within_tolerance"] else "OUTSIDE"
    return "\n".join(
        [
            f"parity on {report['clips']} clips of {report['data']} ({report['split']}):",
            f"  adapter (lightning-asr validation decode): WER {100 * a['wer']:.2f} %, normalised {100 * a['wer_norm']:.2f} %",
            f"  exported ({report['runtime']}): WER {100 * e['wer']:.2f} %, normalised {100 * e['wer_norm']:.2f} %",
            f"  difference: {d['wer']:+.2f} / {d['wer_norm']:+.2f} points, {verdict} the tolerance of "
            f"{report['tolerance_points']:g}; {report['clips_transcribed_differently']} clips transcribed differently",
        ]
    )
