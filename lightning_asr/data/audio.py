"""Every audio decode: a file or its bytes to 16 kHz mono, the checks a clip must pass, the
decoded-audio cache, and Whisper's log-mel features."""

import contextlib
import hashlib
import io
import logging
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from lightning_asr.batch import SAMPLING_RATE, Skipped

log = logging.getLogger(__name__)


class AudioError(Exception):
    """A clip that cannot be used; ``skipped`` is its record for counting."""

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        self.skipped = Skipped(path, reason, detail)
        super().__init__(str(self.skipped))

    @property
    def reason(self) -> str:
        return self.skipped.reason


def span_of(cell: Any) -> tuple[str, float, float | None] | None:
    """A manifest span cell's ``(path, offset, duration)`` in seconds (duration ``None``: to the
    file's end); ``None`` for any other cell (a path, a Hugging Face ``{bytes, path}``)."""
    if isinstance(cell, dict) and "offset" in cell:
        return cell["path"], cell["offset"], cell["duration"]
    return None


def clip_name(cell: Any) -> str:
    """An index cell's name in logs, skip counts and transcripts: its path, and for a span of a file
    the span as a media fragment (``talk.wav#t=60,75``)."""
    span = span_of(cell)
    if isinstance(cell, dict) and "row" in cell:  # a row of a shard (lightning_asr.data.shards)
        return f"{cell['path']}#row={cell['row']}"
    if span is None:
        return cell["path"] if isinstance(cell, dict) else cell
    path, start, duration = span
    return f"{path}#t={start:g},{'' if duration is None else f'{start + duration:g}'}"


def load_audio(
    path: str,
    sampling_rate: int = SAMPLING_RATE,
    data: bytes | None = None,
    span: tuple[float, float | None] | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``path`` (mp3/wav/flac/ogg via libsndfile), or its bytes ``data``, to mono float32
    at ``sampling_rate``. ``span`` (offset, duration in seconds; duration ``None``: to the end)
    seeks and decodes only that part of the file.

    Raises :class:`AudioError` naming the file and why, instead of libsndfile's generic message
    (it calls a 0-byte file "not a regular file"). A stream holding NaN or infinite samples is an
    error here, where the file is known: once it is features, it only shows as a NaN loss.
    """
    if data is None:
        if os.path.isdir(path):
            raise AudioError(path, "not_a_file", "a directory")
        if not os.path.isfile(path):
            raise AudioError(path, "missing", "no such file")
        if os.path.getsize(path) == 0:
            raise AudioError(path, "empty", "0 bytes")
    name = name or path
    try:
        with decoder_notes(name):
            if span is None:
                audio, rate = sf.read(path if data is None else io.BytesIO(data), dtype="float32", always_2d=True)
            else:
                audio, rate = _read_span(path, *span, name)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        # libsndfile says "does not exist or is not a regular file" for any stream it cannot parse.
        raise AudioError(name, "undecodable", f"not a readable audio stream: {type(err).__name__}") from None
    if audio.shape[0] == 0:
        raise AudioError(name, "undecodable", "no audio frames")
    bad = audio.size - int(np.isfinite(audio).sum())
    if bad:
        raise AudioError(name, "non_finite", f"{bad} NaN or infinite sample(s)")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sampling_rate:
        audio = soxr.resample(audio, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


@contextlib.contextmanager
def decoder_notes(name: str) -> Iterator[None]:
    """What the C decoders write to the process's standard error while decoding (libmpg123's "warning: Cannot read
    next header …" on a damaged MP3), logged as one warning that names the clip instead of a line that names nothing."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no standard error to borrow
        yield
        return
    with tempfile.TemporaryFile() as notes:
        os.dup2(notes.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            notes.seek(0)
            said = " ".join(notes.read(4096).decode(errors="replace").split())
            if said:  # also when the decode failed: then the notes say why
                log.warning("%s: the decoder says: %s", name, said)


def _read_span(path: str, offset: float, duration: float | None, name: str) -> tuple[np.ndarray, int]:
    with sf.SoundFile(path) as f:
        rate, frames = f.samplerate, f.frames
        start = int(round(offset * rate))
        want = int(round(duration * rate)) if duration is not None else max(frames - start, 0)
        if start >= frames:
            raise AudioError(name, "span_out_of_range", f"starts at {offset:g} s, the file lasts {frames / rate:.1f} s")
        f.seek(start)
        audio = f.read(want, dtype="float32", always_2d=True)
    if audio.shape[0] < 0.9 * want:  # the file ends well inside the span: it cannot match its transcript
        raise AudioError(
            name,
            "span_out_of_range",
            f"ends {audio.shape[0] / rate:.1f} s into a {duration:g} s span (the file lasts {frames / rate:.1f} s)",
        )
    return audio, rate


def header_seconds(path: str) -> float | None:
    """The duration libsndfile reads from ``path``'s header, without decoding; ``None`` if unreadable."""
    try:
        return sf.info(path).duration
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
        return None


def stated_duration(path: str) -> float | None:
    """The duration an MP3's Xing/Info header promises, in seconds; ``None`` when it has none.

    A download cut mid-file still decodes, to a fraction of its audio, and libsndfile's own frame
    count is measured on what is there; only the encoder's header still knows the full length.
    """
    if not path.lower().endswith(".mp3"):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:  # an ID3v2 tag first: its size is 4 x 7 bits
        start = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F)
        with open(path, "rb") as f:
            f.seek(start)
            head = f.read(4096)
        start = 0
    if len(head) < 4 or head[start] != 0xFF or head[start + 1] & 0xE0 != 0xE0:
        return None
    version = (head[start + 1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    rates = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
    rate_index = (head[start + 2] >> 2) & 3
    if version not in rates or rate_index == 3:
        return None
    tag = max(head.find(b"Xing", start, start + 200), head.find(b"Info", start, start + 200))
    if tag < 0 or len(head) < tag + 12:
        return None
    flags, frames = struct.unpack(">II", head[tag + 4 : tag + 12])
    if not flags & 1:
        return None
    samples_per_frame = 1152 if version == 3 else 576
    return frames * samples_per_frame / rates[version][rate_index]


def read_clip(audio: Any, name: str, cache_dir: str | None = None, labelled: bool = True) -> np.ndarray:
    """One index cell's 16 kHz audio: a path, a Hugging Face ``Audio(decode=False)`` cell (bytes
    or path), a manifest span (path, offset, duration) or a shard's row (path, row). With ``cache_dir``, a decoded clip is
    kept as float16 ``.npy`` and read from there next time. A labelled clip that decodes to under
    90 % of its header's duration is ``truncated`` (it cannot match its transcript); an unlabelled
    one is only warned about."""
    span = span_of(audio)
    if isinstance(audio, dict) and "row" in audio:
        from lightning_asr.data.shards import shard_bytes  # shards writes clips through this module

        return load_audio(name, data=shard_bytes(audio["path"], audio["row"]), name=name)
    if isinstance(audio, dict):
        if audio.get("bytes"):
            return load_audio(name, data=audio["bytes"])
        audio = audio["path"]

    def decode() -> np.ndarray:  # a span of a longer recording: the file's header says nothing about it
        return load_audio(audio, span=span[1:], name=name) if span is not None else _checked(audio, labelled)

    if cache_dir is None:
        return decode()
    cached = Path(cache_dir) / (hashlib.sha1(name.encode()).hexdigest() + ".npy")
    if cached.is_file():
        try:
            return np.load(cached).astype(np.float32)
        except (OSError, ValueError, EOFError) as err:  # a cut or garbled entry: decode it again
            log.warning(
                "data.cache_dir: %s (cache of %s) is unreadable (%s): decoding the clip again", cached, audio, err
            )
    # As the cache keeps it (float16): a clip sounds the same decoded or cached, so a run's transcripts and WER do
    # not depend on what an earlier run left in the cache (the demo's step-0 WER moved between runs).
    waveform = decode().astype(np.float16).astype(np.float32)
    if str(cached.parent) not in UNWRITABLE:
        store(cached, waveform)
    return waveform


def usable_cache(cache_dir: str | None) -> str | None:
    """``cache_dir`` where a file can be written into it; else ``None``, with one warning: a read-only or full disk
    costs the cache, not the run."""
    if cache_dir is None:
        return None
    probe = Path(cache_dir) / f".probe.{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(bytes(65536))  # a clip's worth: a disk with a few bytes left is as good as full
        probe.unlink()
        return cache_dir
    except OSError as err:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        log.warning(
            "data.cache_dir: cannot write to %s (%s): training without the decoded-audio cache",
            cache_dir,
            err.strerror or err,
        )
        return None


# Cache folders this process failed to write to (a full or read-only disk): decoding goes on without them.
UNWRITABLE: set[str] = set()


def store(cached: Path, waveform: np.ndarray) -> None:
    """``waveform`` into the cache, whole or not at all: a failed write (disk full, folder read-only) leaves no
    partial file and turns this process's caching into that folder off, with one warning."""
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp, waveform.astype(np.float16))
        os.replace(tmp, cached)  # atomic: another worker never reads half a file
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        UNWRITABLE.add(str(cached.parent))
        log.warning(
            "data.cache_dir: cannot write to %s (%s): decoding without the cache from here on",
            cached.parent,
            err.strerror or err,
        )


def _checked(path: str, labelled: bool) -> np.ndarray:
    waveform = load_audio(path)
    stated, duration = stated_duration(path), len(waveform) / SAMPLING_RATE
    if stated is not None and duration < 0.9 * stated:
        detail = f"decodes to {duration:.1f} s of the {stated:.1f} s its header states"
        if labelled:
            raise AudioError(path, "truncated", detail)
        log.warning("%s: truncated? %s", path, detail)
    return waveform


def log_mel(extractor, waveform: np.ndarray) -> np.ndarray:
    """The extractor's log-mel of ``waveform`` padded to its window, computed over the audio alone.

    Whisper pads every clip with zeros to 30 s before its STFT: a 5 s clip spends 5/6 of the work on
    frames of silence. Their value is known: log10 of the power floor (-10), raised to the clip's
    maximum - 8, then scaled like every frame, i.e. ``max(normalised max - 2, -1.5)``. So the STFT
    runs over the audio plus a whole second of zeros (beyond the last window's reach) and the rest
    is filled in: the same features (tests/data/test_datamodule.py checks), 6x faster for a 5 s clip.
    """
    if getattr(extractor, "dither", 0.0):  # dither puts noise on the padding too: nothing to fill in
        return extractor(waveform, sampling_rate=SAMPLING_RATE, return_tensors="np").input_features[0]
    tail = -(-(len(waveform) + extractor.n_fft) // SAMPLING_RATE) * SAMPLING_RATE
    mel = extractor(
        waveform, sampling_rate=SAMPLING_RATE, return_tensors="np", max_length=min(extractor.n_samples, tail)
    ).input_features[0]
    frames = extractor.n_samples // extractor.hop_length
    if mel.shape[1] < frames:
        mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])), constant_values=max(mel.max() - 2.0, -1.5))
    return mel
