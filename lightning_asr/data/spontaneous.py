"""Common Voice Spontaneous Speech (``data.source: spontaneous``), as the Mozilla Data Collective ships it:
``sps-corpus-{version}-{date}-{locale}/`` (or its ``.tar.gz``) holding ``ss-corpus-{locale}.tsv``, one row per
recording (``audio_file``, ``transcription``, ``duration_ms``, ``split``: ``train``, ``dev``, ``test`` or
``unassigned``), and the recordings in ``audios/``.

Transcriptions carry annotation tags (``[disfluency]``, ``[noise]``, ...): they are removed, since Whisper is to write
the words. A recording longer than the model's window is, by ``long_clips``: ``window``, cut into windows of at most
30 s labelled with the words said in each (``align.py``: found once by the base model, then kept beside the TSV), or
``skip``, skipped and counted (``too_long``).
"""

import csv
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from lightning_asr.batch import Skipped
from lightning_asr.data.sources import DataConfigError, read_table

log = logging.getLogger(__name__)

LongClips = Literal["window", "skip"]
COLUMNS = ["audio_file", "transcription", "duration_ms", "split"]
TAG = r"\[[^\[\]]{1,40}\]"  # [disfluency], [noise], [laughter], ...


def corpus_tsv(path: str, locale: str) -> Path:
    """``ss-corpus-{locale}.tsv`` in ``path`` (the release folder), or in the one ``sps-corpus-*-{locale}`` folder
    inside it, or ``path`` itself when it names the TSV."""
    root = Path(path).expanduser()
    if root.is_file():
        return root
    name = f"ss-corpus-{locale}.tsv"
    for candidate in [root / name, *sorted(root.glob(f"sps-corpus-*-{locale}/{name}"))]:
        if candidate.is_file():
            return candidate
    found = sorted(p.name for p in root.glob("ss-corpus-*.tsv")) if root.is_dir() else []
    raise DataConfigError(f"data.path: no {name} in {path}" + (f"; found {found}" if found else ""))


def _recordings(tsv: Path, split: str, strict: bool = True) -> tuple[pa.Table, list[Skipped]]:
    """``split``'s recordings (several joined by ``+``) as ``audio`` (its path), ``text`` (untagged) and ``seconds``;
    with ``strict``, a split no row has is an error naming those that exist."""
    table, skipped = read_table(tsv, COLUMNS, "Spontaneous Speech corpus")
    wanted = split.split("+")
    splits = sorted(set(table["split"].to_pylist()))
    if strict and (missing := [s for s in wanted if s not in splits]):
        raise DataConfigError(f"split {missing[0]!r}: no row of {tsv.name} has it; its splits: {splits}")
    table = table.filter(pc.is_in(table["split"], value_set=pa.array(wanted)))
    text = pc.replace_substring_regex(pc.replace_substring_regex(table["transcription"], TAG, " "), r"\s+", " ")
    audio = pc.binary_join_element_wise(str(tsv.parent / "audios") + os.sep, table["audio_file"], "")
    return pa.table({"audio": audio, "text": pc.utf8_trim_whitespace(text), "seconds": _seconds(table, tsv)}), skipped


def spontaneous_index(
    path: str, locale: str, split: str, max_s: float, long_clips: LongClips = "window", model: str | None = None
) -> tuple[pa.Table, list[Skipped]]:
    """Rows of ``split`` (several joined by ``+``): recordings up to ``max_s`` whole, longer ones as their windows
    (already found by :func:`prepare_windows`) or skipped."""
    tsv = corpus_tsv(path, locale)
    table, skipped = _recordings(tsv, split)
    long = pc.greater(table["seconds"], max_s)
    rows = table.filter(pc.invert(long)).select(["audio", "text"])
    too_long = list(zip(table["audio"].filter(long).to_pylist(), table["seconds"].filter(long).to_pylist()))
    if long_clips == "skip" or not too_long:
        skipped += [Skipped(a, "too_long", f"{s:.1f} s > {max_s:g} s (data.long_clips: skip)") for a, s in too_long]
        return rows, skipped
    found = windows_file(tsv, split, model, max_s)
    if not found.is_file():
        raise DataConfigError(f"{tsv}: {len(too_long)} recording(s) over {max_s:g} s have no windows yet ({found})")
    spans, bad = read_windows(found)
    long_names = {a for a, _ in too_long}
    spans = spans.filter(
        pc.is_in(spans["audio"].combine_chunks().field("path"), value_set=pa.array(sorted(long_names)))
    )
    skipped += [s for s in bad if s.path in long_names]
    return pa.concat_tables([_as_spans(rows), spans]), skipped


def _seconds(table: pa.Table, tsv: Path) -> pa.ChunkedArray:
    """Each row's ``duration_ms`` in seconds; an empty cell is 0 (its length is checked when the clip loads)."""
    cells = pc.if_else(pc.equal(table["duration_ms"], ""), "0", table["duration_ms"])
    try:
        return pc.divide(pc.cast(cells, pa.float64()), 1000.0)
    except pa.ArrowInvalid as err:
        raise DataConfigError(f"{tsv}: duration_ms holds a value that is not a number ({err})") from None


def _as_spans(rows: pa.Table) -> pa.Table:
    """Whole recordings as span cells, so that they share one column type with the windows."""
    n = len(rows)
    cells = pa.StructArray.from_arrays(
        [rows["audio"].combine_chunks(), pa.array([0.0] * n), pa.array([None] * n, pa.float64())],
        names=["path", "offset", "duration"],
    )
    return pa.table({"audio": cells, "text": rows["text"]})


def windows_file(tsv: Path, split: str, model: str | None, max_s: float) -> Path:
    """Where the windows of ``split``'s long recordings, found by ``model`` for windows of ``max_s``, are kept: beside
    the TSV (another model or window length finds its own)."""
    tag = hashlib.sha1(f"{model}|{max_s:g}".encode()).hexdigest()[:10]
    return tsv.parent / ".lightning-asr" / f"windows-{split}-{tag}.tsv"


def prepare_windows(path: str, locale: str, split: str, max_s: float, model: str, language: str) -> None:
    """Find the windows of ``split``'s recordings over ``max_s`` with the base ``model`` once, and keep them beside
    the TSV (written whole, then renamed into place: an interrupted run leaves none)."""
    tsv = corpus_tsv(path, locale)
    target = windows_file(tsv, split, model, max_s)
    if target.is_file():
        return
    # Not strict: prepare_data prepares every split a stage may read (test too), and reading one no row has is
    # the index's error, named when a stage reads it.
    table, _ = _recordings(tsv, split, strict=False)
    long = table.filter(pc.greater(table["seconds"], max_s))
    recordings = list(zip(long["audio"].to_pylist(), long["text"].to_pylist()))
    if not recordings:
        return
    from lightning_asr.data.align import align_recordings

    log.info("long clips: aligning %d recording(s) of %s over %g s with %s", len(recordings), split, max_s, model)
    spans, skipped = align_recordings(model, language, recordings, max_s)
    try:
        target.parent.mkdir(exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=".windows-", dir=target.parent)
    except OSError as err:
        raise DataConfigError(f"{tsv.parent}: cannot keep the long clips' windows there ({err.strerror})") from None
    with os.fdopen(fd, "w", newline="") as f:
        out = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        out.writerow(["path", "offset", "duration", "text", "skipped"])
        out.writerows([s.path, s.offset, s.duration, s.text, ""] for s in spans)
        out.writerows([s.path, "", "", "", f"{s.reason}: {s.detail}"] for s in skipped)
    os.replace(staging, target)
    log.info(
        "long clips: %d windows from %d recordings, %d skipped -> %s", len(spans), len(recordings), len(skipped), target
    )


def read_windows(file: Path) -> tuple[pa.Table, list[Skipped]]:
    """A windows file as span rows, and the recordings it names as skipped."""
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))
    kept = [r for r in rows if not r["skipped"]]
    cells = pa.StructArray.from_arrays(
        [
            pa.array([r["path"] for r in kept], pa.string()),
            pa.array([float(r["offset"]) for r in kept], pa.float64()),
            pa.array([float(r["duration"]) for r in kept], pa.float64()),
        ],
        names=["path", "offset", "duration"],
    )
    skipped = [Skipped(r["path"], *r["skipped"].split(": ", 1)) for r in rows if r["skipped"]]
    return pa.table({"audio": cells, "text": pa.array([r["text"] for r in kept], pa.string())}), skipped
