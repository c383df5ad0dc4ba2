"""Reading a corpus into an index: Common Voice releases, manifests (csv/tsv/jsonl), Hugging Face datasets (and, in
their own modules, Spontaneous Speech and shards). Each reader returns the same two-column Arrow table (``audio``,
``text``) and the rows it could not read, as :class:`~lightning_asr.batch.Skipped` records; no audio is touched here.
"""

import contextlib
import csv
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from lightning_asr.batch import Skipped
from lightning_asr.data.audio import clip_name
from lightning_asr.text import clean_transcript

log = logging.getLogger(__name__)


class DataConfigError(ValueError):
    """A wrong path, split, column or language in the data configuration."""


def read_table(path: Path, columns: list[str], kind: str) -> tuple[pa.Table, list[Skipped]]:
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
    convert = pacsv.ConvertOptions(
        include_columns=columns,
        column_types={c: pa.string() for c in columns},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
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
                    raise DataConfigError(
                        f"{where}: the header is not UTF-8 ({err.reason} at byte {err.start})"
                    ) from None
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
    would resolve outside ``clips/``, or names a link to a file outside ``root``, is dropped and named.
    """
    base = common_voice_folder(root, locale)
    outside = links_outside(base / "clips", Path(root).expanduser())  # one scan for every split
    tables, skipped = [], []
    for name in split.split("+"):
        tsv = base / f"{name}.tsv"
        if not tsv.is_file():
            found = sorted(p.stem for p in base.glob("*.tsv"))
            raise DataConfigError(f"split {name!r}: {tsv} does not exist; splits here: {found}")
        table, bad = read_table(tsv, ["path", "sentence"], "Common Voice split")
        skipped += bad
        clips = str(base / "clips") + os.sep
        escapes = pc.match_substring_regex(table["path"], _ESCAPES)
        if outside:
            escapes = pc.or_(escapes, pc.is_in(table["path"], value_set=pa.array(sorted(outside))))
        if pc.any(escapes).as_py():
            for path in table["path"].filter(escapes).to_pylist():
                detail = (
                    f"a link to a file outside {root}"
                    if path in outside
                    else f"{tsv.name} names {path!r}, which is not inside {clips}"
                )
                skipped.append(Skipped(clips + path, "outside_clips", detail))
            table = table.filter(pc.invert(escapes))
        tables.append(
            pa.table({"audio": pc.binary_join_element_wise(clips, table["path"], ""), "text": table["sentence"]})
        )
    return pa.concat_tables(tables), skipped


def links_outside(clips: Path, root: Path) -> set[str]:
    """Names in ``clips`` that are symbolic links to a file outside ``root`` (a release unpacked from a hostile
    archive can hold ``clips/x.mp3 -> /etc/passwd``). One directory scan; links are rare, only they are resolved."""
    try:
        entries = [e for e in os.scandir(clips) if e.is_symlink()]
    except OSError:
        return set()
    inside = root.resolve()
    return {e.name for e in entries if not Path(e.path).resolve().is_relative_to(inside)}


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
        table, _ = read_table(durations_tsv, ["clip", "duration[ms]"], "Common Voice clip durations")
        names = pc.replace_substring_regex(audio, r"^.*[/\\]", "")
        found = pc.index_in(names, value_set=table["clip"])
        if found.null_count == 0:
            ms = pc.cast(table["duration[ms]"], pa.float64()).to_numpy(zero_copy_only=False)
            return ms[found.to_numpy(zero_copy_only=False)]
        log.info("%s lacks %d of %d clips: grouping by file size instead", durations_tsv, found.null_count, len(rows))
    if pa.types.is_string(audio.type):
        return _file_sizes(audio.to_pylist())
    cells = audio.combine_chunks()
    if "duration" in {f.name for f in cells.type}:  # manifest spans: their stated durations, where all have one
        durations = cells.field("duration")
        if durations.null_count == 0:
            return durations.to_numpy(zero_copy_only=False).astype(np.float64)
        return _file_sizes(cells.field("path").to_pylist())
    # Hugging Face cells, {bytes, path}: the embedded bytes, else the file the path names.
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
            with contextlib.suppress(OSError):  # missing: skipped (and counted) when its batch loads
                out[i] = os.stat(path).st_size
        return out

    # Threads over chunks, because on network storage a stat is a round trip, not a CPU cost
    # (a million rows on local disk: ~5 s, benchmarks/data_throughput.py).
    with ThreadPoolExecutor(16) as pool:
        return np.concatenate(
            [np.zeros(0), *pool.map(sizes, [paths[i : i + 8192] for i in range(0, len(paths), 8192)])]
        )


SPAN_COLUMNS = ("offset", "duration")


def manifest_index(
    path: str, audio_column: str = "audio", text_column: str | None = "text"
) -> tuple[pa.Table, list[Skipped]]:
    """Rows of a csv/tsv/jsonl manifest; relative audio paths are relative to the manifest.

    A row without audio, or (when ``text_column`` is set) without text, is dropped and named.
    Optional ``offset`` and ``duration`` columns (seconds, as NeMo manifests have them) make a row
    one span of its file: its audio cell is then ``{path, offset, duration}``, and only that span
    is decoded.
    """
    file = Path(path).expanduser()
    span = _present(file, SPAN_COLUMNS)
    columns = [audio_column] + ([text_column] if text_column else []) + span
    table, skipped = read_table(file, columns, "manifest")
    incomplete = pc.is_null(table[audio_column])
    if text_column:
        incomplete = pc.or_(incomplete, pc.is_null(table[text_column]))
    if pc.any(incomplete).as_py():
        for i in np.flatnonzero(incomplete.to_numpy(zero_copy_only=False)):
            row = {c: table[c][int(i)].as_py() for c in columns}
            field = audio_column if row[audio_column] is None else text_column
            reason = "no_audio" if field == audio_column else "no_text"
            skipped.append(
                Skipped(
                    row[audio_column] or f"{file}: row {i + 1}", reason, f"{file.name} row {i + 1} has no {field!r}"
                )
            )
        table = table.filter(pc.invert(incomplete))
    audio = table[audio_column]
    relative = pc.invert(pc.starts_with(audio, "/"))
    audio = pc.if_else(relative, pc.binary_join_element_wise(str(file.parent) + os.sep, audio, ""), audio)
    text = table[text_column] if text_column else pa.array([""] * len(table), pa.string())
    if span:
        audio, keep = _spans(table, audio, span, file, skipped)
        table, text = table.filter(keep), text.filter(keep)
    return pa.table({"audio": audio, "text": text}), skipped


def _present(file: Path, names: tuple[str, ...]) -> list[str]:
    """Which of the optional columns ``names`` a csv/tsv header (or a jsonl file's first object) has."""
    if not file.is_file():
        return []
    if file.suffix != ".jsonl":
        return [n for n in names if n in _header(file, "\t" if file.suffix == ".tsv" else ",")]
    with open(file, "rb") as f:
        first = next((line for line in f if line.strip()), b"{}")
    try:
        keys = json.loads(first)
    except ValueError:
        keys = {}
    return [n for n in names if isinstance(keys, dict) and n in keys]


def _spans(
    table: pa.Table, paths: pa.ChunkedArray, columns: list[str], file: Path, skipped: list[Skipped]
) -> tuple[pa.Array, pa.Array]:
    """``{path, offset, duration}`` cells from the span columns, and which rows had valid ones
    (a span that is not a number, or is negative, drops its row, named)."""
    values = {c: table[c].to_pylist() for c in columns}
    offsets, durations, keep = [], [], []
    for i, path in enumerate(paths.to_pylist()):
        raw_offset, raw_duration = (values[c][i] if c in values else None for c in SPAN_COLUMNS)
        try:
            offset = float(raw_offset) if raw_offset not in (None, "") else 0.0
            duration = float(raw_duration) if raw_duration not in (None, "") else None
            if offset < 0 or (duration is not None and duration <= 0):
                raise ValueError("offset must be >= 0 and duration > 0")
        except ValueError as err:
            skipped.append(Skipped(f"{path} ({file.name} row {i + 1})", "bad_span", str(err)))
            keep.append(False)
            continue
        offsets.append(offset)
        durations.append(duration)
        keep.append(True)
    kept = paths.filter(pa.array(keep)).combine_chunks() if len(paths) else pa.array([], pa.string())
    cells = pa.StructArray.from_arrays(
        [kept, pa.array(offsets, pa.float64()), pa.array(durations, pa.float64())], names=["path", "offset", "duration"]
    )
    return cells, pa.array(keep)


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


def index(
    source: str,
    path: str,
    locale: str,
    split: str,
    audio_column: str = "audio",
    text_column: str | None = "text",
    hf_config: str | None = None,
) -> tuple[pa.Table, list[Skipped]]:
    """One split of ``source`` (``data.source``) as an index of ``audio`` and ``text``, with the rows it could not
    read."""
    if source == "common_voice":
        return common_voice_index(path, locale, split)
    if source == "manifest":
        return manifest_index(path.format(split=split), audio_column, text_column)
    if source == "hf":
        return hf_index(path, hf_config, split, audio_column, text_column), []
    if source == "shards":
        from lightning_asr.data.shards import shards_index  # here: shards reads its clips through this module

        return shards_index(path, split)
    raise DataConfigError(f"data.source: {source!r} is not one of common_voice, spontaneous, manifest, hf, shards")


def release_folder(source: str, path: str, locale: str) -> Path | None:
    """The locale folder of a Common Voice release (where ``clip_durations.tsv`` lives); None for other sources."""
    return common_voice_folder(path, locale) if source == "common_voice" else None


def clean(table: pa.Table, keep_empty: bool = False) -> tuple[pa.Table, list[Skipped]]:
    """A labelled split without rows that cannot train: empty transcripts (unless ``keep_empty``: they then train
    toward no words), then later copies of a clip listed twice (the first is kept)."""
    empty_rows = [] if keep_empty else _empty(table["text"])
    table, empty = _drop(table, empty_rows, "empty_text", "transcript is empty")
    table, repeats = _drop(table, _repeats(table["audio"]), "duplicate", "listed again: used once")
    return table, empty + repeats


def _drop(table: pa.Table, rows: list[int], reason: str, detail: str) -> tuple[pa.Table, list[Skipped]]:
    if not rows:
        return table, []
    skipped = [Skipped(clip_name(table["audio"][i].as_py()), reason, detail) for i in rows]
    keep = np.ones(len(table), dtype=bool)
    keep[rows] = False
    return table.filter(pa.array(keep)), skipped


def _empty(text: pa.ChunkedArray) -> list[int]:
    """Rows whose transcript cleans to nothing. Only short ones can: testing just those keeps a million-row index
    from being copied twice more in memory."""
    short = np.flatnonzero(pc.less_equal(pc.utf8_length(text), 16).to_numpy(zero_copy_only=False))
    return [int(i) for i in short if not clean_transcript(text[int(i)].as_py())]


def _repeats(audio: pa.ChunkedArray) -> list[int]:
    """Rows whose clip an earlier row already lists."""
    if not pa.types.is_string(audio.type) or pc.count_distinct(audio).as_py() == len(audio):
        return []  # one hash pass: a clean release stops here
    counts = pc.value_counts(audio).flatten()
    repeated = counts[0].filter(pc.greater(counts[1], 1))
    seen, later = set(), []
    for i in np.flatnonzero(pc.is_in(audio, value_set=repeated).to_numpy(zero_copy_only=False)):
        name = audio[int(i)].as_py()
        if name in seen:
            later.append(int(i))
        seen.add(name)
    return later
