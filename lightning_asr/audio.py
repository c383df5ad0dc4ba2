"""Reading audio files: decode, downmix, resample to Whisper's 16 kHz."""

import os

import numpy as np
import soundfile as sf
import soxr

SAMPLING_RATE = 16_000


class AudioError(Exception):
    """A clip that cannot be used. ``reason`` is a short tag for counting (``missing``, ``empty`` …)."""

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = path, reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def load_audio(path: str, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Decode ``path`` (mp3/wav/flac/ogg via libsndfile) to mono float32 at ``sampling_rate``.

    Raises :class:`AudioError` naming the file and why, instead of libsndfile's generic message
    (it calls a 0-byte file "not a regular file").
    """
    if not os.path.isfile(path):
        raise AudioError(path, "missing", "no such file")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty", "0 bytes")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        # libsndfile says "does not exist or is not a regular file" for any stream it cannot parse.
        raise AudioError(path, "undecodable", f"not a readable audio stream: {type(err).__name__}") from None
    if audio.shape[0] == 0:
        raise AudioError(path, "undecodable", "no audio frames")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sampling_rate:
        audio = soxr.resample(audio, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)
