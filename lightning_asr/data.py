"""The data path: an index of (audio, transcript) rows, lazy decoding in workers, collation.

Three sources sit behind ``source``: a local Common Voice release, a manifest (csv/tsv/jsonl) and a
Hugging Face dataset. All three become the same two-column index (``audio``, ``text``) held in Arrow
memory, so a million-row release costs tens of megabytes and no audio is touched until a worker
needs the clip.
"""

import csv
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from lightning_asr.audio import SAMPLING_RATE, AudioError, load_audio, stated_duration
from lightning_asr.text import clean_transcript
from lightning_asr.whisper import language_code, load_processor

log = logging.getLogger(__name__)

Source = Literal["common_voice", "manifest", "hf"]


class DataConfigError(ValueError):
    """A wrong path, split, column or language in the data configuration."""


@dataclass
class RetainedSet:
    """A Common Voice split in another language, validated beside the target at every validation.

    Args:
        path: the release folder (holding ``<locale>/``) or the locale folder itself.
        locale: its locale folder, e.g. ``en``.
        language: its language (name or code); validation decodes it in this language.
        split: the split to score.
        max_samples: score only its first N rows; ``None`` for all.
    """

    path: str
    locale: str = "en"
    language: str = "English"
    split: str = "test"
    max_samples: int | None = 200


@dataclass
class Skipped:
    """A row that was dropped, with the reason it is counted under."""

    path: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


# ---------------------------------------------------------------------------------------------
# Index readers: each returns an Arrow table with string columns ``audio`` and ``text``.
# ---------------------------------------------------------------------------------------------


def _read_table(path: Path, columns: list[str], kind: str) -> tuple[pa.Table, list[Skipped]]:
    """Read a csv/tsv/jsonl file's ``columns`` as strings, and the rows that could not be read.

    Arrow reads a clean file in one pass. A file it rejects (a byte that is not UTF-8, a malformed
    JSON line) is read again line by line, so that only the bad lines are dropped, each named as
    ``file:line``. Common Voice TSVs are never quoted.
    """
    if not path.is_file():
        raise DataConfigError(f"{kind} file not found: {path}")
    delimiter = "\t" if path.suffix == ".tsv" else ","
    if path.suffix != ".jsonl":
        header = _header(path, delimiter)
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataConfigError(f"{path}: missing column(s) {missing}; the header has {header}")
    try:
        table = _read_arrow(path, columns, delimiter)
        skipped: list[Skipped] = []
    except (pa.ArrowInvalid, UnicodeDecodeError):
        table, skipped = _read_lines(path, columns, delimiter)
    missing = [c for c in columns if c not in table.schema.names]
    if missing:
        raise DataConfigError(f"{path}: missing column(s) {missing}; found {table.schema.names}")
    return table.select(columns).cast(pa.schema([(c, pa.string()) for c in columns])), skipped


def _read_arrow(path: Path, columns: list[str], delimiter: str) -> pa.Table:
    if path.suffix == ".jsonl":
        return pajson.read_json(path)
    # quote_char=False: real CV sentences contain unbalanced '"', which a quoting reader would
    # silently strip or use to swallow the following rows.
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char=False if delimiter == "\t" else '"')
    convert = pacsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    return pacsv.read_csv(path, parse_options=parse, convert_options=convert)


def _read_lines(path: Path, columns: list[str], delimiter: str) -> tuple[pa.Table, list[Skipped]]:
    """The slow reader for a file Arrow rejected: every line on its own, bad ones named and dropped."""
    values: dict[str, list[str | None]] = {c: [] for c in columns}
    skipped, header = [], None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if header is None and path.suffix != ".jsonl":
                    raise DataConfigError(f"{where}: the header is not UTF-8 ({err.reason} at byte {err.start})") from None
                skipped.append(Skipped(where, "bad_encoding", f"not UTF-8 at byte {err.start}"))
                continue
            if path.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError(f"a JSON {type(row).__name__}, not an object")
                except ValueError as err:
                    skipped.append(Skipped(where, "bad_json", str(err)))
                    continue
            elif header is None:
                header = line.split(delimiter)
                continue
            else:
                cells = line.split(delimiter) if delimiter == "\t" else next(csv.reader([line]))
                if len(cells) != len(header):  # a tab inside a sentence would shift every later field
                    skipped.append(Skipped(where, "bad_row", f"{len(cells)} fields, the header has {len(header)}"))
                    continue
                row = dict(zip(header, cells))
            for c in columns:
                cell = row.get(c)
                values[c].append(None if cell is None else str(cell))
    return pa.table({c: pa.array(v, pa.string()) for c, v in values.items()}), skipped


def _header(path: Path, delimiter: str) -> list[str]:
    with open(path, "rb") as f:
        line = f.readline().removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n")
    try:
        return line.decode("utf-8").split(delimiter)
    except UnicodeDecodeError as err:
        raise DataConfigError(f"{path}:1: the header is not UTF-8 ({err.reason} at byte {err.start})") from None


# A Common Voice ``path`` is a file name inside ``clips/``: an absolute path or a ``..`` step leaves it.
_ESCAPES = r"^[/~]|(^|/)\.\.(/|$)"


def common_voice_index(root: str, locale: str, split: str) -> tuple[pa.Table, list[Skipped]]:
    """Rows of a Common Voice release: ``split`` is one TSV name or several joined by ``+``.

    ``root`` is the release folder holding ``<locale>/`` or the locale folder itself. Old (10-column)
    and new (13-column) headers both work: only ``path`` and ``sentence`` are read. A ``path`` that
    would resolve outside ``clips/`` is dropped and named.
    """
    base = common_voice_folder(root, locale)
    tables, skipped = [], []
    for name in split.split("+"):
        tsv = base / f"{name}.tsv"
        if not tsv.is_file():
            found = sorted(p.stem for p in base.glob("*.tsv"))
            raise DataConfigError(f"split {name!r}: {tsv} does not exist; splits here: {found}")
        table, bad = _read_table(tsv, ["path", "sentence"], "Common Voice split")
        skipped += bad
        clips = str(base / "clips") + os.sep
        escapes = pc.match_substring_regex(table["path"], _ESCAPES)
        if pc.any(escapes).as_py():
            for path in table["path"].filter(escapes).to_pylist():
                skipped.append(Skipped(clips + path, "outside_clips", f"{tsv.name} names {path!r}, which is not inside {clips}"))
            table = table.filter(pc.invert(escapes))
        tables.append(pa.table({"audio": pc.binary_join_element_wise(clips, table["path"], ""), "text": table["sentence"]}))
    return pa.concat_tables(tables), skipped


def common_voice_folder(root: str, locale: str) -> Path:
    base = Path(root).expanduser()
    if (base / locale).is_dir():
        base = base / locale
    if not base.is_dir():
        raise DataConfigError(f"data.path: Common Voice folder not found: {root}")
    return base


def clip_lengths(rows: pa.Table, durations_tsv: Path | None = None) -> np.ndarray:
    """A length for each row, only ever compared with the others (for length-grouped batches).

    Common Voice's own ``clip_durations.tsv`` gives exact durations for free when it covers every
    row; otherwise each clip's encoded size stands in (one ``stat`` per file, no decoding).
    """
    audio = rows["audio"]
    if durations_tsv is not None and durations_tsv.is_file() and pa.types.is_string(audio.type):
        table, _ = _read_table(durations_tsv, ["clip", "duration[ms]"], "Common Voice clip durations")
        names = pc.replace_substring_regex(audio, r"^.*[/\\]", "")
        found = pc.index_in(names, value_set=table["clip"])
        if found.null_count == 0:
            ms = pc.cast(table["duration[ms]"], pa.float64()).to_numpy(zero_copy_only=False)
            return ms[found.to_numpy(zero_copy_only=False)]
        log.info("%s lacks %d of %d clips: grouping by file size instead", durations_tsv, found.null_count, len(rows))
    if pa.types.is_string(audio.type):
        return _file_sizes(audio.to_pylist())
    # Hugging Face cells, {bytes, path}: the embedded bytes, else the file the path names.
    cells = audio.combine_chunks()
    lengths = pc.binary_length(cells.field("bytes")).to_numpy(zero_copy_only=False).astype(np.float64)
    unembedded = np.flatnonzero(np.isnan(lengths))
    if len(unembedded):
        paths = cells.field("path").take(pa.array(unembedded)).to_pylist()
        lengths[unembedded] = _file_sizes([p or "" for p in paths])
    return lengths


def _file_sizes(paths: list[str]) -> np.ndarray:
    def sizes(chunk: list[str]) -> np.ndarray:
        out = np.zeros(len(chunk))
        for i, path in enumerate(chunk):
            try:
                out[i] = os.stat(path).st_size
            except OSError:  # missing: skipped (and counted) when its batch loads
                pass
        return out

    # Threads over chunks, because on network storage a stat is a round trip, not a CPU cost
    # (a million rows on local disk: ~5 s, benchmarks/data_throughput.py).
    with ThreadPoolExecutor(16) as pool:
        return np.concatenate([np.zeros(0), *pool.map(sizes, [paths[i : i + 8192] for i in range(0, len(paths), 8192)])])


def manifest_index(path: str, audio_column: str = "audio", text_column: str | None = "text") -> tuple[pa.Table, list[Skipped]]:
    """Rows of a csv/tsv/jsonl manifest; relative audio paths are relative to the manifest.

    A row without audio, or (when ``text_column`` is set) without text, is dropped and named.
    """
    file = Path(path).expanduser()
    columns = [audio_column] + ([text_column] if text_column else [])
    table, skipped = _read_table(file, columns, "manifest")
    incomplete = pc.is_null(table[audio_column])
    if text_column:
        incomplete = pc.or_(incomplete, pc.is_null(table[text_column]))
    if pc.any(incomplete).as_py():
        for i in np.flatnonzero(incomplete.to_numpy(zero_copy_only=False)):
            row = {c: table[c][int(i)].as_py() for c in columns}
            field = audio_column if row[audio_column] is None else text_column
            reason = "no_audio" if field == audio_column else "no_text"
            skipped.append(Skipped(row[audio_column] or f"{file}: row {i + 1}", reason, f"{file.name} row {i + 1} has no {field!r}"))
        table = table.filter(pc.invert(incomplete))
    audio = table[audio_column]
    relative = pc.invert(pc.starts_with(audio, "/"))
    audio = pc.if_else(relative, pc.binary_join_element_wise(str(file.parent) + os.sep, audio, ""), audio)
    text = table[text_column] if text_column else pa.array([""] * len(table), pa.string())
    return pa.table({"audio": audio, "text": text}), skipped


def hf_index(name: str, config: str | None, split: str, audio_column: str, text_column: str) -> pa.Table:
    """Rows of a Hugging Face dataset, audio left encoded (our decoder reads it; no FFmpeg needed).

    The dataset's own Arrow table (memory-mapped from its cache) becomes the index; its ``audio``
    cells are ``{bytes, path}`` structs.
    """
    import datasets

    ds = datasets.load_dataset(name, config, split=split)
    for column in (audio_column, text_column):
        if column not in ds.column_names:
            raise DataConfigError(f"dataset {name!r}: no column {column!r}; columns: {ds.column_names}")
    ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    ds = ds.select_columns([audio_column, text_column]).rename_columns({audio_column: "audio", text_column: "text"})
    return ds.flatten_indices().data.table


# ---------------------------------------------------------------------------------------------
# The dataset: one row -> features + labels, or a Skipped record.
# ---------------------------------------------------------------------------------------------


class SpeechDataset(Dataset):
    """Decodes one clip per item, in whichever worker asks for it.

    Bad rows come back as :class:`Skipped` (or raise, with ``strict``) so one broken file costs one
    clip, not the run. Labelled clips are held to more than unlabelled ones: a clip that is too
    short, digital silence, or cut short of its stated length cannot match its transcript, so it
    would teach the model to invent words; the same clip is still transcribed when asked.
    """

    def __init__(
        self,
        rows: pa.Table,
        processor: Any,
        max_duration_s: float = 30.0,
        max_label_tokens: int = 448,
        strict: bool = False,
        cache_dir: str | None = None,
        with_labels: bool = True,
        min_duration_s: float = 0.0,
        language: str | None = None,
    ) -> None:
        self.rows, self.processor, self.language = rows, processor, language
        self.max_duration_s, self.max_label_tokens, self.min_duration_s = max_duration_s, max_label_tokens, min_duration_s
        self.strict, self.cache_dir, self.with_labels = strict, cache_dir, with_labels

    def __len__(self) -> int:
        return len(self.rows)

    def _row(self, index: int) -> tuple[Any, str]:
        return self.rows["audio"][index].as_py(), self.rows["text"][index].as_py()

    def _audio(self, audio: Any, name: str) -> np.ndarray:
        if isinstance(audio, dict):  # a Hugging Face Audio(decode=False) cell
            if audio.get("bytes"):
                return load_audio(name, data=audio["bytes"])
            audio = audio["path"]
        if self.cache_dir is None:
            return self._decode(audio)
        cached = Path(self.cache_dir) / (hashlib.sha1(audio.encode()).hexdigest() + ".npy")
        if cached.is_file():
            try:
                return np.load(cached).astype(np.float32)
            except (OSError, ValueError, EOFError) as err:  # a cut or garbled entry: decode it again
                log.warning("data.cache_dir: %s (cache of %s) is unreadable (%s): decoding the clip again", cached, audio, err)
        waveform = self._decode(audio)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, waveform.astype(np.float16))
        os.replace(tmp, cached)  # atomic: another worker never reads half a file
        return waveform

    def _decode(self, path: str) -> np.ndarray:
        waveform = load_audio(path)
        stated, duration = stated_duration(path), len(waveform) / SAMPLING_RATE
        if stated is not None and duration < 0.9 * stated:
            detail = f"decodes to {duration:.1f} s of the {stated:.1f} s its header states"
            if self.with_labels:
                raise AudioError(path, "truncated", detail)
            log.warning("%s: truncated? %s", path, detail)
        return waveform

    def __getitem__(self, index: int) -> dict | Skipped:
        audio, text = self._row(index)
        name = audio["path"] if isinstance(audio, dict) else audio
        text = clean_transcript(text)
        try:
            labels = None
            if self.with_labels:
                labels = self.processor.tokenizer(text).input_ids
                if len(labels) > self.max_label_tokens:
                    raise AudioError(name, "label_too_long", f"{len(labels)} tokens > {self.max_label_tokens}")
            waveform = self._audio(audio, name)
            duration = len(waveform) / SAMPLING_RATE
            if duration > self.max_duration_s:
                raise AudioError(name, "too_long", f"{duration:.1f} s > {self.max_duration_s:g} s")
            if self.with_labels and duration < self.min_duration_s:
                raise AudioError(name, "too_short", f"{1000 * duration:.0f} ms < {self.min_duration_s:g} s")
            if self.with_labels and not waveform.any():
                raise AudioError(name, "silent", "every sample is zero")
        except AudioError as err:
            if self.strict:
                raise
            return Skipped(err.path, err.reason, err.detail)
        features = log_mel(self.processor.feature_extractor, waveform)
        return {"input_features": features, "labels": labels, "duration": duration, "path": name, "text": text,
                "language": self.language}


def log_mel(extractor, waveform: np.ndarray) -> np.ndarray:
    """The extractor's log-mel of ``waveform`` padded to its window, computed over the audio alone.

    Whisper pads every clip with zeros to 30 s before its STFT: a 5 s clip spends 5/6 of the work on
    frames of silence. Their value is known: log10 of the power floor (-10), raised to the clip's
    maximum - 8, then scaled like every frame, i.e. ``max(normalised max - 2, -1.5)``. So the STFT
    runs over the audio plus a whole second of zeros (beyond the last window's reach) and the rest
    is filled in: the same features (tests/test_data.py checks), 6x faster for a 5 s clip.
    """
    if getattr(extractor, "dither", 0.0):  # dither puts noise on the padding too: nothing to fill in
        return extractor(waveform, sampling_rate=SAMPLING_RATE, return_tensors="np").input_features[0]
    tail = -(-(len(waveform) + extractor.n_fft) // SAMPLING_RATE) * SAMPLING_RATE
    mel = extractor(waveform, sampling_rate=SAMPLING_RATE, return_tensors="np",
                    max_length=min(extractor.n_samples, tail)).input_features[0]
    frames = extractor.n_samples // extractor.hop_length
    if mel.shape[1] < frames:
        mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])), constant_values=max(mel.max() - 2.0, -1.5))
    return mel


def collate(items: list[dict | Skipped], decoder_start_token_id: int, trim_frames: bool = False) -> dict:
    """Stack features once, pad labels with -100, and carry skipped rows out for counting.

    The decoder start token is stripped when every row begins with it: the model prepends it
    itself when it shifts the labels right (as the guide's collator does). ``trim_frames`` cuts
    the mel frames to the longest clip in the batch (rounded up to 1 s) for the trimmed encoder.
    """
    good = [x for x in items if not isinstance(x, Skipped)]
    batch: dict[str, Any] = {"skipped": [x for x in items if isinstance(x, Skipped)]}
    if not good:
        return batch | {"input_features": torch.empty(0), "paths": [], "texts": [], "durations": torch.empty(0)}
    frames = good[0]["input_features"].shape[-1]
    if trim_frames:
        frames = min(frames, 100 * int(np.ceil(max(x["duration"] for x in good))))
    # Trimmed before stacking: stacking 256 whole windows (245 MB of a worker's fresh memory) and
    # then cutting took about as long as building the clips. default_collate stacks straight into
    # shared memory inside a DataLoader worker, so the batch is not copied again on its way out.
    batch["input_features"] = default_collate([torch.from_numpy(x["input_features"][..., :frames]) for x in good])
    batch["durations"] = torch.tensor([x["duration"] for x in good])
    batch["paths"] = [x["path"] for x in good]
    batch["texts"] = [x["text"] for x in good]
    batch["language"] = good[0].get("language")  # a dataset's clips share one language
    if good[0]["labels"] is not None:
        labels = [x["labels"] for x in good]
        if all(row and row[0] == decoder_start_token_id for row in labels):
            labels = [row[1:] for row in labels]
        padded = torch.full((len(labels), max(map(len, labels))), -100, dtype=torch.long)
        for i, row in enumerate(labels):
            padded[i, : len(row)] = torch.tensor(row)
        batch["labels"] = padded
    return batch


# ---------------------------------------------------------------------------------------------
# Sampling: every clip once per epoch per rank, resumable mid-epoch.
# ---------------------------------------------------------------------------------------------


# Steps per sorted window of length-grouped training batches.
GROUP_WINDOW = 64


class ShardSampler(DistributedSampler):
    """A rank's share of the data, shuffled per epoch, startable mid-epoch.

    Subclassing ``DistributedSampler`` tells Lightning not to replace it. Training shards are
    padded to equal length (DDP needs the same number of steps on every rank); evaluation shards
    are not, so no clip is counted twice in WER.

    With ``lengths``, the global order is grouped by length (:func:`group_by_length`) in windows
    of ``GROUP_WINDOW`` global steps. Step k of rank r takes clips ``k·W·B + r + j·W`` of it: one
    contiguous run of similar clips shared by all ranks, so trimmed batches carry little padding
    and no rank waits on a longer batch. The windows depend on W and B; ``order_for`` pins the
    W and B of a checkpoint for the epoch it resumes, so that epoch continues exactly.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int, pad: bool,
                 lengths: np.ndarray | None = None, batch_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.pad, self.start, self.lengths, self.batch_size = pad, 0, lengths, batch_size
        self.order_for: tuple[int, int, int] | None = None  # (epoch, world, batch) of a resumed epoch

    def _shard(self) -> list[int]:
        n = len(self.dataset)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        if self.lengths is not None:
            # Training sorts within windows of up to GROUP_WINDOW steps of the shuffled order (the
            # epoch stays random); evaluation sorts everything.
            world, batch = self.num_replicas, self.batch_size
            if self.order_for is not None and self.order_for[0] == self.epoch:
                world, batch = self.order_for[1:]
            step = world * batch
            # At least ~4 windows an epoch, so a small dataset is not one sorted (hence fixed) order.
            span = step * max(1, min(GROUP_WINDOW, n // (4 * step))) if self.shuffle else max(n, 1)
            order = group_by_length(order, self.lengths, span)
        if self.pad and n % self.num_replicas:
            order += order[: self.num_replicas - n % self.num_replicas]
        return order[self.rank :: self.num_replicas]

    def __iter__(self):
        shard = self._shard()[self.start :]
        self.start = 0
        return iter(shard)

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.pad:
            return -(-n // self.num_replicas)
        return len(range(self.rank, n, self.num_replicas))


def group_by_length(order: list[int], lengths: np.ndarray, span: int) -> list[int]:
    """``order`` sorted by length, longest first, within consecutive windows of ``span`` clips;
    the window holding the longest clip goes first, so an out-of-memory shows at step 1, not
    hours in (the scheme of Hugging Face's LengthGroupedSampler).

    ``span`` should hold several global steps: a step's clips then come from one window.
    """
    order = np.asarray(order, dtype=np.int64)
    windows = [order[i : i + span] for i in range(0, len(order), span)]
    windows = [w[np.argsort(-lengths[w], kind="stable")] for w in windows]
    if not windows:
        return []
    first = max(range(len(windows)), key=lambda i: lengths[windows[i][0]])
    windows.insert(0, windows.pop(first))
    return np.concatenate(windows).tolist()


# ---------------------------------------------------------------------------------------------
# The DataModule.
# ---------------------------------------------------------------------------------------------


class SpeechDataModule(L.LightningDataModule):
    """Common Voice (or a manifest, or a Hugging Face dataset) for Whisper fine-tuning.

    Args:
        source: where rows come from: ``common_voice`` (a local release), ``manifest``
            (csv/tsv/jsonl with an audio path and a text column) or ``hf`` (a dataset id).
        path: the release folder (holding ``<locale>/`` or being it), the manifest file (a
            ``{split}`` placeholder picks one per split), or the dataset id.
        locale: Common Voice locale folder, e.g. ``mr``.
        train_split: split(s) to train on; ``+`` joins several (the guide's ``train+dev``).
        val_split: split validated on during ``fit`` and by ``validate``.
        test_split: split used by ``test``.
        model: the Whisper model id or folder whose processor (tokenizer + feature extractor)
            turns rows into tensors. Linked from ``model.model`` by the CLI.
        language: transcript language (name or code, e.g. ``Marathi`` / ``mr``). Linked from the model.
        task: ``transcribe`` or ``translate``. Linked from the model.
        batch_size: clips per training step (per GPU).
        eval_batch_size: clips per validation/test step; generation is cheap per clip, so larger helps.
        num_workers: decoding processes; 0 decodes in the training process.
        max_duration_s: longer clips are skipped; ``None`` is the model's window (30 s for Whisper).
        min_duration_s: shorter labelled clips are skipped: too short to hold a sentence, they are
            cut recordings. ``predict`` transcribes them anyway.
        max_samples: use only the first N rows of each split (smoke runs); ``None`` for all.
        strict: raise on the first bad clip instead of skipping and counting it.
        cache_dir: keep decoded 16 kHz audio here (float16 .npy) so later epochs skip decoding.
        trim_frames: cut each batch's mel frames to its longest clip (needs ``model.trim_encoder``).
        group_by_length: batch clips of similar length together (durations from Common Voice's
            ``clip_durations.tsv``, else file sizes). With ``trim_frames`` it removes most padding;
            under DDP every rank's batch of a step has similar lengths, so no rank waits. Clips are
            sorted only within windows of the shuffled order, so training order stays random.
        audio_column: audio column of a manifest or dataset.
        text_column: text column of a manifest or dataset; ``None`` for unlabelled audio (``predict``).
        hf_config: dataset config name for ``source: hf`` (e.g. the language).
        seed: shuffling seed; the order is a function of seed and epoch, so resume replays it.
        retain: a Common Voice split in another language (:class:`RetainedSet`) scored at every
            validation as ``val_retain/*``: how much of the base's other languages the fine-tune
            costs. Costs a second validation pass over its clips.
    """

    def __init__(
        self,
        source: Source = "common_voice",
        path: str = "data/common_voice",
        locale: str = "mr",
        train_split: str = "train+dev",
        val_split: str = "test",
        test_split: str = "test",
        model: str = "openai/whisper-large-v2",
        language: str = "Marathi",
        task: Literal["transcribe", "translate"] = "transcribe",
        batch_size: int = 8,
        eval_batch_size: int = 16,
        num_workers: int = 2,
        max_duration_s: float | None = None,
        min_duration_s: float = 0.1,
        max_samples: int | None = None,
        strict: bool = False,
        cache_dir: str | None = None,
        trim_frames: bool = False,
        group_by_length: bool = False,
        audio_column: str = "audio",
        text_column: str | None = "text",
        hf_config: str | None = None,
        seed: int = 42,
        retain: RetainedSet | None = None,
    ) -> None:
        super().__init__()
        for field, value, least in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1),
                                    ("num_workers", num_workers, 0), ("max_samples", max_samples, 1)):
            if value is not None and value < least:
                raise DataConfigError(f"data.{field}: must be at least {least}, got {value}")
        if max_duration_s is not None and max_duration_s <= min_duration_s:
            raise DataConfigError(f"data.max_duration_s: must exceed data.min_duration_s ({min_duration_s:g}), got {max_duration_s:g}")
        # LightningCLI hands a dict; hparams keep a dict, which a checkpoint loads without unpickling a class.
        retain = dataclasses.asdict(retain) if isinstance(retain, RetainedSet) else retain
        self.retain = RetainedSet(**retain) if retain else None
        if self.retain:
            language_code(self.retain.language)  # fail here, not after loading a model
        self.save_hyperparameters()
        self.datasets: dict[str, SpeechDataset] = {}
        self._skipped: dict[tuple[str, str], Skipped] = {}
        self._resume: dict | None = None
        self._clip_lengths: dict[str, np.ndarray] = {}
        self.processor = None

    # -- rows ------------------------------------------------------------------------------------

    def rows(self, split: str, labelled: bool = True, retained: bool = False) -> pa.Table:
        """The index of one split (of the retained set with ``retained``). Rows that cannot be read
        are dropped and named; so are, for labelled splits, empty transcripts and later copies of a
        clip listed twice."""
        hp = self.hparams
        max_samples = self.retain.max_samples if retained else hp.max_samples
        if retained:
            table, skipped = common_voice_index(self.retain.path, self.retain.locale, split)
        elif hp.source == "common_voice":
            table, skipped = common_voice_index(hp.path, hp.locale, split)
        elif hp.source == "manifest":
            table, skipped = manifest_index(hp.path.format(split=split), hp.audio_column, hp.text_column)
        elif hp.source == "hf":
            table, skipped = hf_index(hp.path, hp.hf_config, split, hp.audio_column, hp.text_column), []
        else:
            raise DataConfigError(f"data.source: {hp.source!r} is not one of common_voice, manifest, hf")
        self._note(skipped)
        if max_samples is not None:
            table = table.slice(0, max_samples)
        # Predictions keep every input, repeats included: their outputs line up with the inputs.
        return self._drop_repeats(self._drop_empty(table)) if labelled else table

    def _drop_empty(self, table: pa.Table) -> pa.Table:
        text = table["text"]
        # Only short transcripts can be blank; testing just those keeps a million-row index from
        # being copied twice more in memory.
        short = np.flatnonzero(pc.less_equal(pc.utf8_length(text), 16).to_numpy(zero_copy_only=False))
        empty = [int(i) for i in short if not clean_transcript(text[int(i)].as_py())]
        return self._drop(table, empty, "empty_text", "transcript is empty")

    def _drop_repeats(self, table: pa.Table) -> pa.Table:
        audio = table["audio"]
        if not pa.types.is_string(audio.type):
            return table
        counts = pc.value_counts(audio).flatten()  # one hash pass; a clean release stops here
        repeated = counts[0].filter(pc.greater(counts[1], 1))
        if not len(repeated):
            return table
        seen, later = set(), []
        for i in np.flatnonzero(pc.is_in(audio, value_set=repeated).to_numpy(zero_copy_only=False)):
            name = audio[int(i)].as_py()
            if name in seen:
                later.append(int(i))
            seen.add(name)
        return self._drop(table, later, "duplicate", "listed again: used once")

    def _drop(self, table: pa.Table, rows: list[int], reason: str, detail: str) -> pa.Table:
        if not rows:
            return table
        skipped = []
        for i in rows:
            cell = table["audio"][i].as_py()
            skipped.append(Skipped(cell["path"] if isinstance(cell, dict) else cell, reason, detail))
        self._note(skipped)
        keep = np.ones(len(table), dtype=bool)
        keep[rows] = False
        return table.filter(pa.array(keep))

    # -- Lightning hooks ---------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if self.processor is None:
            self.processor = load_processor(hp.model, hp.language, hp.task)
        splits = {
            "fit": {"train": hp.train_split, "val": hp.val_split},
            "validate": {"val": hp.val_split},
            "test": {"test": hp.test_split},
            "predict": {"predict": hp.test_split},
        }[stage]
        if self.retain is not None and stage in ("fit", "validate"):
            splits["retain"] = self.retain.split
        max_tokens = _max_target_positions(hp.model)
        for name, split in splits.items():
            labelled = name != "predict"
            if name not in self.datasets:
                self.datasets[name] = SpeechDataset(
                    self.rows(split, labelled, retained=name == "retain"),
                    self.processor,
                    max_duration_s=hp.max_duration_s or self.processor.feature_extractor.chunk_length,
                    max_label_tokens=max_tokens,
                    strict=hp.strict,
                    cache_dir=hp.cache_dir,
                    with_labels=labelled,
                    min_duration_s=hp.min_duration_s,
                    language=language_code(self.retain.language if name == "retain" else hp.language),
                )
                self._check_not_empty(name, split)
        log.info("data: %s", ", ".join(f"{k} {len(v)} rows" for k, v in self.datasets.items()))

    def _check_not_empty(self, name: str, split: str) -> None:
        if len(self.datasets[name]):
            return
        what = f"data: the {name} split {split!r} ({self.hparams.path}) has no usable rows"
        if name in ("train", "predict"):
            raise DataConfigError(f"{what}; {self.summary()}")
        log.warning("%s: nothing to score, so no %s/wer and no best/ adapter", what, name)

    def _loader(self, name: str, batch_size: int, train: bool) -> DataLoader:
        dataset = self.datasets[name]
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        # Predictions keep the input order: transcripts are read in the order the files were given.
        lengths = self._lengths(name) if self.hparams.group_by_length and name != "predict" else None
        sampler = ShardSampler(dataset, world, rank, shuffle=train, seed=self.hparams.seed, pad=train,
                               lengths=lengths, batch_size=batch_size)
        if train and self._resume and self._resume["epoch"] == (self.trainer.current_epoch if self.trainer else 0):
            # Rank r's shard is order[r::W], so the first m clips of every shard are order[:m * W]:
            # a global count resumes correctly under any world size (to within one batch).
            sampler.set_epoch(self._resume["epoch"])
            sampler.start = self._resume["samples"] // world
            # The grouped order of the interrupted epoch was cut for its world size and batch.
            sampler.order_for = (self._resume["epoch"], self._resume.get("world", world),
                                 self._resume.get("batch_size", self.hparams.batch_size))
            self._resume = None
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=self.collate,
            pin_memory=torch.cuda.is_available(),
            # Iterators draw their worker seed from this, not from the global RNG, so starting a
            # loader mid-run (resume) leaves the training RNG (dropout) exactly where it was.
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def _lengths(self, name: str) -> np.ndarray:
        if name not in self._clip_lengths:
            hp = self.hparams
            folder = None
            if name == "retain":
                folder = common_voice_folder(self.retain.path, self.retain.locale)
            elif hp.source == "common_voice":
                folder = common_voice_folder(hp.path, hp.locale)
            tsv = folder / "clip_durations.tsv" if folder else None
            start = time.perf_counter()
            self._clip_lengths[name] = clip_lengths(self.datasets[name].rows, tsv)
            log.info("group_by_length: %s lengths of %d clips in %.1f s", name, len(self.datasets[name]),
                     time.perf_counter() - start)
        return self._clip_lengths[name]

    def collate(self, items: list) -> dict:
        return collate(items, self.processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>"), self.hparams.trim_frames)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, train=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        val = self._loader("val", self.hparams.eval_batch_size, train=False)
        if "retain" not in self.datasets:
            return val
        return [val, self._loader("retain", self.hparams.eval_batch_size, train=False)]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.hparams.eval_batch_size, train=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        self._note(batch.pop("skipped", []))
        return batch

    def _note(self, skipped: list[Skipped]) -> None:
        """Count each skipped clip once (repeated validations see it again), name it once."""
        if not skipped:
            return
        if self.hparams.strict:
            first = skipped[0]
            raise AudioError(first.path, first.reason, first.detail)
        for item in skipped:
            key = (item.path, item.reason)
            if key not in self._skipped:
                self._skipped[key] = item
                log.warning("skipped %s", item)
        trainer = self.trainer
        if trainer is not None and trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.log_metrics({f"data/skipped_{k}": float(v) for k, v in self.skipped.items()}, step=trainer.global_step)

    @property
    def skipped(self) -> Counter[str]:
        """Distinct skipped clips by reason."""
        return Counter(item.reason for item in self._skipped.values())

    def skipped_clips(self) -> dict[str, Skipped]:
        """Every skipped clip (or index row) by its name."""
        return {item.path: item for item in self._skipped.values()}

    def summary(self) -> str:
        if not self._skipped:
            return "data: no clips skipped"
        parts = ", ".join(f"{v} {k}" for k, v in sorted(self.skipped.items()))
        return f"data: skipped {len(self._skipped)} clip(s): {parts} (each named in a warning above)"

    def teardown(self, stage: str) -> None:
        if self.trainer is None or self.trainer.is_global_zero:
            log.info(self.summary())

    def state_dict(self) -> dict:
        """The training position, so a resumed run continues with the next unseen batch."""
        if self.trainer is None:
            return {}
        batches = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        samples = batches * self.hparams.batch_size * self.trainer.world_size
        return {"epoch": self.trainer.current_epoch, "samples": samples, "world": self.trainer.world_size,
                "batch_size": self.hparams.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state or None


def _max_target_positions(model: str) -> int:
    from transformers import WhisperConfig

    try:
        return WhisperConfig.from_pretrained(model).max_target_positions
    except OSError:  # a processor-only folder: Whisper's own limit
        return 448
