"""``lightning-asr transcribe``: using a trained adapter (``export.py`` writes it out for other runtimes)."""

import contextlib
import dataclasses
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_asr.data import SpeechDataModule
from lightning_asr.data.audio import AudioError, clip_name, span_of
from lightning_asr.deploy import longform
from lightning_asr.model.adapter import adapter_info
from lightning_asr.model.knobs import Decoding
from lightning_asr.model.module import WhisperLoRA
from lightning_asr.model.whisper import LANGUAGES, Quantization, language_code, max_target_positions, resolve_model

log = logging.getLogger(__name__)
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")
# <|startoftranscript|><|lang|><|task|><|notimestamps|>: the longest prompt Whisper decodes after.
PROMPT_TOKENS = 4


class TranscriptWriter(BasePredictionWriter):
    """Appends each batch's transcripts to ``<output>.txt`` (``path<TAB>text``, a line a clip) and
    ``<output>.jsonl``, for ``lightning-asr predict``. Skipped clips are named in the log, not here;
    ``lightning-asr transcribe`` writes a row for every input, failed ones included.

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

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        write_rows(*self._paths(trainer), prediction, mode="a")


def write_rows(txt: Path | str, jsonl: Path | str, rows: list[dict], mode: str = "w") -> None:
    """The transcript formats: ``path<TAB>text`` lines, and one JSON object a row."""
    with open(txt, mode) as t, open(jsonl, mode) as j:
        for row in rows:
            t.write(f"{row['path']}\t{row.get('text', '')}\n")
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
    max_new_tokens: int | None = None,
    num_workers: int = 2,
    accelerator: str = "auto",
    audio_column: str = "audio",
    decoding: Literal["generate", "static"] = "generate",
    timestamps: bool = False,
    subtitles: str | None = None,
) -> int:
    """Transcribe audio files with a base Whisper and (optionally) a trained adapter.

    Writes one row per input, in input order: ``<output>.txt`` (``path<TAB>text``) and ``<output>.jsonl`` (``path``,
    ``text``, ``duration``; ``error`` instead for an input that could not be read). Returns the number of such
    inputs; the command exits 1 when there are any. Inputs longer than 30 s go window by window (``longform.py``).

    Args:
        inputs: audio files (mp3/wav/flac/ogg), or one manifest (.csv/.tsv/.jsonl) with an audio column.
        adapter: adapter folder written by training; its base, language, task and quantization are used unless given.
        output: path of the outputs without their suffix.
        base: base model id or folder (default: the adapter's).
        language: transcript language (default: the adapter's); ``auto`` (the default without an
            adapter, or one that records none) detects each file's language, as Whisper does, and
            writes it in the jsonl's ``language`` field.
        task: ``transcribe`` or ``translate`` (default: the adapter's, else ``transcribe``).
        quantization: how to load the base (default: as trained).
        batch_size: clips decoded together.
        max_new_tokens: longest transcript of a clip or 30 s window, in tokens (default: all the
            decoder's positions after the prompt, 444 for Whisper). Validation's 128 fits a Common
            Voice sentence, not a window of speech: Whisper's byte-level tokens spend ~8 a Marathi
            word, and 28 s windows of it needed up to 328.
        num_workers: audio decoding processes.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        audio_column: audio column of a manifest.
        decoding: ``generate`` (transformers) or ``static`` (the same tokens from our loop over a
            preallocated cache; faster on a GPU with an unquantized base).
        timestamps: decode every input with timestamp tokens, window by window, and write its
            ``segments`` (``start``, ``end`` in seconds, ``text``) in the jsonl.
        subtitles: a folder to write each input's segments into as ``NNNN_<name>.srt`` and ``.vtt``
            (implies ``timestamps``).
    """
    check_writable({"--output": Path(output).parent, "--subtitles": subtitles})  # before any decoding
    module = decoder_module(adapter, base, language, task, quantization, max_new_tokens, decoding)
    manifest, cells, predictions, skipped = _predict(module, inputs, audio_column, batch_size, num_workers, accelerator)
    order = [clip_name(cell) for cell in cells]
    rows = _in_input_order(order, inputs if not manifest else order, predictions, skipped)
    timestamps = timestamps or subtitles is not None
    device = "cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    for i, (row, cell) in enumerate(zip(rows, cells)):
        if timestamps and "error" not in row or row.get("error", "").startswith("too_long"):
            rows[i] = _long_form(module.to(device).eval(), row, cell, timestamps, subtitles, i)
    return _report(rows, output)


def check_writable(folders: dict[str, Path | str | None]) -> None:
    """Raise, naming the flag, where no file can be written into its folder (made if missing); ``None``: not asked."""
    for flag, folder in folders.items():
        if folder is None:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise ValueError(
                f"transcribe: {flag}: cannot write into {folder} ({err.strerror or err}); choose another folder"
            ) from None


def _report(rows: list[dict], output: str) -> int:
    """Write the transcripts, name each failed input; the number of failures."""
    failed = [r for r in rows if "error" in r]
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_rows(output + ".txt", output + ".jsonl", rows)
    print(f"wrote {len(rows) - len(failed)} transcript(s) to {output}.txt and {output}.jsonl", flush=True)
    for row in failed:
        print(f"failed: {row['path']}: {row['error']}", file=sys.stderr, flush=True)
    return len(failed)


def _predict(
    module: WhisperLoRA, inputs: list[str], audio_column: str, batch_size: int, num_workers: int, accelerator: str
) -> tuple[bool, list[str], list[dict], dict]:
    """``trainer.predict`` over the inputs (files, or one manifest): whether it was a manifest, the
    index cells in order, the predictions, and the skipped clips by name."""
    manifest = len(inputs) == 1 and inputs[0].endswith(MANIFEST_SUFFIXES)
    with tempfile.TemporaryDirectory() as tmp:
        path = inputs[0] if manifest else str(Path(tmp) / "inputs.jsonl")
        if not manifest:
            with open(path, "w") as f:
                for name in inputs:
                    f.write(json.dumps({audio_column: str(Path(name).expanduser().absolute())}) + "\n")
        data = SpeechDataModule(
            source="manifest",
            path=path,
            model=module.hparams.model,
            language=module.language or "auto",
            task=module.hparams.task,
            eval_batch_size=batch_size,
            num_workers=num_workers,
            audio_column=audio_column,
            text_column=None,
            processor=module.processor,
        )
        trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_model_summary=False)
        # Inputs longer than a window are transcribed window by window afterwards (_long_form): not skipped.
        # The skip ledger's warnings and the data's summary of them.
        with _quiet(("lightning_asr.data.skips", "lightning_asr.data.datamodule"), "too_long"):
            batches = trainer.predict(module, datamodule=data)
        cells = data.datasets["predict"].rows["audio"].to_pylist()
    return manifest, cells, [r for b in batches for r in b], data.skipped_clips()


@contextlib.contextmanager
def _quiet(loggers: tuple[str, ...], reason: str) -> Iterator[None]:
    """The named loggers without their records that name ``reason`` (a skip that is not one here)."""

    def drop(record: logging.LogRecord) -> bool:
        return reason not in record.getMessage()

    for name in loggers:
        logging.getLogger(name).addFilter(drop)
    try:
        yield
    finally:
        for name in loggers:
            logging.getLogger(name).removeFilter(drop)


def decoder_module(
    adapter: str | None,
    base: str | None,
    language: str | None,
    task: str | None,
    quantization: Quantization | None,
    max_new_tokens: int | None,
    decoding: str,
) -> WhisperLoRA:
    """The module that transcribes: what is given, else what the adapter folder records;
    ``max_new_tokens`` None: the whole window the base's decoder holds."""
    info = adapter_info(adapter) if adapter else {}
    base = base or info.get("base_model")
    if not base:
        raise ValueError("transcribe: give --base (no adapter, or the adapter does not name its base)")
    try:
        base = resolve_model(base)
    except FileNotFoundError as err:
        recorded = (
            f" (recorded in {adapter}/lightning_asr.json; pass --base)"
            if adapter and base == info.get("base_model")
            else ""
        )
        raise FileNotFoundError(f"transcribe: base {err}{recorded}") from None
    if max_new_tokens is None:
        max_new_tokens = max_target_positions(base) - PROMPT_TOKENS
    recorded = info.get("language")
    if language is None:
        language = recorded or "auto"
    elif recorded and language != "auto" and language_code(language, "--language") != language_code(recorded):
        log.warning(
            "transcribe: the adapter was trained for %s; transcribing as %s, as --language asks",
            LANGUAGES[language_code(recorded)].title(),
            LANGUAGES[language_code(language)].title(),
        )
    module = WhisperLoRA(
        model=base,
        language=language,
        task=task or info.get("task", "transcribe"),
        quantization=quantization or info.get("quantization", "none"),
        from_config=info.get("from_config", False),
        init_seed=info.get("init_seed", 0),
        adapter=adapter,
        decoding=Decoding(decoding, max_new_tokens),
    )
    return module


def _long_form(module: WhisperLoRA, row: dict, cell, timestamps: bool, subtitles: str | None, index: int) -> dict:
    """``row`` transcribed window by window (any length); its segments and subtitle files if asked."""
    path, start, duration = span_of(cell) or (cell, 0.0, None)
    end = None if duration is None else start + duration
    try:
        segments, language = longform.transcribe_long(module, path, start=start, end=end)
    except AudioError as err:
        return {"path": row["path"], "error": f"{err.reason} ({err.skipped.detail})"}
    duration = (end if end is not None else longform.file_seconds(path)) - start
    out = {"path": row["path"], "text": " ".join(s.text for s in segments), "duration": round(duration, 3)}
    if module.language is None:
        out["language"] = language
    if timestamps:
        out["segments"] = [dataclasses.asdict(s) for s in segments]
    if subtitles is not None:
        stem = Path(subtitles) / f"{index:04d}_{Path(row['path'].split('#')[0]).stem}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        # Suffixes added, not swapped: talk.v2.flac gives 0000_talk.v2.srt, not 0000_talk.srt.
        stem.with_name(stem.name + ".srt").write_text(longform.srt(segments))
        stem.with_name(stem.name + ".vtt").write_text(longform.vtt(segments))
    return out


def _in_input_order(order: list[str], names: list[str], predictions: list[dict], skipped: dict) -> list[dict]:
    """One row per input: its prediction, or why it has none (predictions keep the input order)."""
    rows, done = [], iter(predictions)
    pending = next(done, None)
    for resolved, name in zip(order, names):
        if pending is not None and pending["path"] == resolved:
            rows.append(pending | {"path": name})
            pending = next(done, None)
        else:
            why = skipped.get(resolved)
            rows.append({"path": name, "error": f"{why.reason} ({why.detail})" if why else "not transcribed"})
    return rows
