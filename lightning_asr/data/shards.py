"""Sharded corpora (``data.source: shards``) and the writer that makes them (``lightning-asr shard``).

A shard is a Parquet file in the layout the Hugging Face hub serves datasets in (``{split}-00000-of-00012.parquet``;
columns ``audio`` as ``{bytes, path}``, ``text`` and ``duration``), so ``datasets.load_dataset("parquet", ...)``
reads ours and a hub dataset's downloaded Parquet files read as shards. Opening a split reads each file's footer and
its ``text`` and ``duration`` columns only: start-up grows with the transcripts, not the audio. A clip is read by row:
its row group (``ROW_GROUP`` rows) is read and kept, so the next clips of the group cost no I/O. Every rank and worker
reads rows by the sampler's order (``ShardSampler``), so resume is exact and the world size may change; ranks read
disjoint rows, not disjoint files.
"""

import io
import logging
import math
import os
import tempfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import soundfile as sf

from lightning_asr.batch import SAMPLING_RATE, Skipped
from lightning_asr.data.audio import AudioError, clip_name, header_seconds, read_clip
from lightning_asr.data.sources import DataConfigError

log = logging.getLogger(__name__)

ROW_GROUP = 32  # rows read together: ~1 MB of Common Voice MP3s
INDEX = ".index.arrow"  # beside each shard: its text and duration columns (write_sidecar)
SCHEMA = pa.schema(
    [
        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("text", pa.string()),
        ("duration", pa.float64()),
    ]
)


def shard_files(path: str, split: str) -> list[Path]:
    """``split``'s shards (several splits joined by ``+``) in ``path`` or its ``data/`` folder (the hub's layout)."""
    root = Path(path).expanduser()
    folder = root / "data" if (root / "data").is_dir() and not list(root.glob("*.parquet")) else root
    if not folder.is_dir():
        raise DataConfigError(f"data.path: shard folder not found: {path}")
    files = []
    for name in split.split("+"):
        found = sorted(folder.glob(f"{name}-*.parquet"))
        if not found:
            splits = sorted({p.name.split("-")[0] for p in folder.glob("*.parquet")})
            raise DataConfigError(f"split {name!r}: no {name}-*.parquet in {folder}; splits here: {splits}")
        files += found
    return files


def shards_index(path: str, split: str) -> tuple[pa.Table, list[Skipped]]:
    """A split's rows: each audio cell ``{path, row, duration}`` names its shard and row; nothing else is read."""

    def columns(file: Path) -> pa.Table:
        sidecar = file.with_name(file.name + INDEX)
        try:
            if sidecar.is_file() and sidecar.stat().st_mtime >= file.stat().st_mtime:
                table = feather.read_table(sidecar)
            else:  # a shard written elsewhere (a hub dataset's Parquet files): its columns, row group by row group
                table = pq.read_table(file, columns=["text", "duration"])
        except (pa.ArrowInvalid, OSError) as err:
            raise DataConfigError(f"{file}: not a readable shard ({err})") from None
        n = len(table)
        # The file's name once, as a dictionary every row points into: a million Python strings took seconds.
        path = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([str(file)]))
        cell = pa.StructArray.from_arrays(
            [path, pa.array(np.arange(n)), table["duration"].combine_chunks()], names=["path", "row", "duration"]
        )
        return pa.table({"audio": cell, "text": table["text"]})

    with ThreadPoolExecutor(8) as pool:
        tables = list(pool.map(columns, shard_files(path, split)))
    return pa.concat_tables(tables), []


# Each process's open shards with the first row of each row group, and its last row groups read.
_FILES: dict[tuple[int, str], tuple[pq.ParquetFile, np.ndarray]] = {}
_GROUPS: OrderedDict[tuple[str, int], list] = OrderedDict()


def shard_bytes(file: str, row: int) -> bytes:
    """The encoded audio of ``row`` of shard ``file``, by its row group (the last few groups are kept)."""
    key = (os.getpid(), file)
    if key not in _FILES:
        shard = pq.ParquetFile(file)
        sizes = [shard.metadata.row_group(g).num_rows for g in range(shard.num_row_groups)]
        _FILES[key] = shard, np.cumsum([0, *sizes[:-1]])
    shard, starts = _FILES[key]
    group = int(np.searchsorted(starts, row, side="right")) - 1
    if (file, group) not in _GROUPS:
        _GROUPS[(file, group)] = shard.read_row_group(group, columns=["audio"]).column("audio").to_pylist()
        if len(_GROUPS) > 8:
            _GROUPS.popitem(last=False)
    return _GROUPS[(file, group)][row - int(starts[group])]["bytes"]


def encoded(cell, name: str) -> tuple[bytes, float]:
    """A clip's bytes for a shard and its length in seconds: a file's own bytes as they are (an MP3 stays an MP3);
    a span of a recording, or embedded samples, decoded and stored as 16 kHz FLAC."""
    path = cell if isinstance(cell, str) else None
    if path is not None and os.path.isfile(path):
        seconds = header_seconds(path)
        if seconds is not None:
            with open(path, "rb") as f:
                return f.read(), seconds
    waveform = read_clip(cell, name)
    buffer = io.BytesIO()
    sf.write(buffer, waveform, SAMPLING_RATE, format="FLAC")
    return buffer.getvalue(), len(waveform) / SAMPLING_RATE


def write_shards(rows: pa.Table, output: Path, split: str, rows_per_shard: int) -> tuple[list[Path], list[Skipped]]:
    """``rows`` (an index: ``audio``, ``text``) as ``split``'s shards in ``output``; each file is written whole under a
    temporary name, then renamed into place. A clip that cannot be read is skipped and returned."""
    output.mkdir(parents=True, exist_ok=True)
    count = max(1, math.ceil(len(rows) / rows_per_shard))
    written, skipped = [], []
    for index in range(count):
        part = rows.slice(index * rows_per_shard, rows_per_shard)
        cells, texts, durations = [], [], []
        for audio, text in zip(part["audio"].to_pylist(), part["text"].to_pylist()):
            name = clip_name(audio)
            try:
                data, seconds = encoded(audio, name)
            except AudioError as err:
                skipped.append(err.skipped)
                continue
            cells.append({"bytes": data, "path": os.path.basename(name)})  # a span keeps its #t=start,end
            texts.append(text)
            durations.append(seconds)
        table = pa.table({"audio": cells, "text": texts, "duration": durations}, schema=SCHEMA)
        target = output / f"{split}-{index:05d}-of-{count:05d}.parquet"
        fd, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=output)
        os.close(fd)
        pq.write_table(table, staging, row_group_size=ROW_GROUP, compression="snappy")
        os.replace(staging, target)
        write_sidecar(target, table.select(["text", "duration"]))
        written.append(target)
        log.info("shard: %s, %d clips (%d of %d files)", target, len(table), index + 1, count)
    return written, skipped


def write_sidecar(shard: Path, columns: pa.Table) -> None:
    """A shard's transcripts and durations as one Arrow file beside it, what opening the split reads: a Parquet file
    of 32-row groups takes ~5x longer to give them (a million rows: 4.9 s)."""
    fd, staging = tempfile.mkstemp(prefix=f".{shard.name}.", dir=shard.parent)
    os.close(fd)
    feather.write_feather(columns, staging, compression="uncompressed")
    os.replace(staging, shard.with_name(shard.name + INDEX))


def shard(
    output: str,
    path: str,
    source: str = "common_voice",
    split: str = "train",
    locale: str = "mr",
    language: str = "Marathi",
    rows_per_shard: int = 2000,
    max_samples: int | None = None,
    audio_column: str = "audio",
    text_column: str = "text",
    hf_config: str | None = None,
    long_clips: str = "window",
    model: str = "openai/whisper-large-v2",
) -> int:
    """Write one split of any corpus the trainer reads as Parquet shards, for ``data.source: shards``.

    Args:
        output: the folder to write ``{split}-00000-of-0000N.parquet`` into.
        path: the corpus, as ``data.path``.
        source: the corpus's kind, as ``data.source``.
        split: the split to write (several joined by ``+`` are written as one).
        locale: as ``data.locale``.
        language: its transcripts' language (Spontaneous Speech windows are aligned in it).
        rows_per_shard: clips per file; ~2,000 Common Voice clips make ~60 MB.
        max_samples: only the first N rows.
        audio_column: a manifest's or dataset's audio column.
        text_column: a manifest's or dataset's text column.
        hf_config: a dataset's config name.
        long_clips: as ``data.long_clips`` (Spontaneous Speech).
        model: the base model that aligns long Spontaneous Speech recordings (``long_clips: window``).
    """
    from lightning_asr.data.datamodule import SpeechDataModule

    if rows_per_shard < 1:
        raise DataConfigError(f"rows_per_shard: must be at least 1, got {rows_per_shard}")
    data = SpeechDataModule(
        source=source,
        path=path,
        locale=locale,
        language=language,
        model=model,
        train_split=split,
        val_split=split,
        test_split=split,
        audio_column=audio_column,
        text_column=text_column,
        hf_config=hf_config,
        long_clips=long_clips,
        max_samples=max_samples,
    )
    data.prepare_data()
    rows = data.rows(split)
    files, skipped = write_shards(rows, Path(output).expanduser(), split, rows_per_shard)
    data.ledger.note(skipped)
    print(f"shard: {len(rows) - len(skipped)} clips of {path} ({split}) in {len(files)} file(s) in {output}")
    print(data.summary())
    return 0 if files else 1
