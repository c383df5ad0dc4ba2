"""Reading audio: decode (a file or its bytes), check, downmix, resample to Whisper's 16 kHz."""

import io
import os
import struct

import numpy as np
import soundfile as sf
import soxr

SAMPLING_RATE = 16_000


class AudioError(Exception):
    """A clip that cannot be used. ``reason`` is a short tag for counting (``missing``, ``empty`` …)."""

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = path, reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def load_audio(path: str, sampling_rate: int = SAMPLING_RATE, data: bytes | None = None) -> np.ndarray:
    """Decode ``path`` (mp3/wav/flac/ogg via libsndfile), or its bytes ``data``, to mono float32
    at ``sampling_rate``.

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
    try:
        audio, rate = sf.read(path if data is None else io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        # libsndfile says "does not exist or is not a regular file" for any stream it cannot parse.
        raise AudioError(path, "undecodable", f"not a readable audio stream: {type(err).__name__}") from None
    if audio.shape[0] == 0:
        raise AudioError(path, "undecodable", "no audio frames")
    bad = audio.size - int(np.isfinite(audio).sum())
    if bad:
        raise AudioError(path, "non_finite", f"{bad} NaN or infinite sample(s)")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sampling_rate:
        audio = soxr.resample(audio, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


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
