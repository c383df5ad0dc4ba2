"""Waveform transforms for training clips, in the data workers: speed perturbation and additive noise."""

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from lightning_asr.batch import SAMPLING_RATE
from lightning_asr.data.audio import load_audio

NOISE_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


@dataclass
class AudioAugment:
    """Speed perturbation and additive noise on each training clip's waveform, as ``data.augment.*``.

    Applied in the data workers before the features, to the training split only: validation, test,
    predict and the retained set never see it. Each clip's draw comes from its own RNG, seeded by
    ``data.seed``, the epoch and the clip's index: the same in any worker, again on resume, new
    every epoch. Off by default.

    Args:
        speed_factors: each clip is resampled by a factor drawn from this list (e.g. ``[0.9, 1.0, 1.1]``,
            Kaldi's speed perturbation: tempo and pitch together); 1.1 plays it 1.1x as fast, so its
            duration is divided by 1.1. A factor that would push a clip past the model's window is
            not drawn for it. Empty: off.
        noise_prob: share of clips that get noise added (0 turns noise off).
        noise_dir: folder of noise recordings (wav/flac/mp3/ogg, searched recursively), a random
            stretch of one file per clip; ``None`` adds generated white noise instead.
        snr_min_db: lowest signal-to-noise ratio drawn, in dB (lower is noisier).
        snr_max_db: highest signal-to-noise ratio drawn, in dB.
    """

    speed_factors: list[float] = field(default_factory=list)
    noise_prob: float = 0.0
    noise_dir: str | None = None
    snr_min_db: float = 10.0
    snr_max_db: float = 30.0

    def __post_init__(self) -> None:
        if any(not 0.5 <= f <= 2.0 for f in self.speed_factors):
            raise ValueError(f"data.augment.speed_factors: each must be in [0.5, 2], got {list(self.speed_factors)}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"data.augment.noise_prob: must be in [0, 1], got {self.noise_prob}")
        if self.snr_min_db > self.snr_max_db:
            raise ValueError(
                f"data.augment.snr_min_db ({self.snr_min_db}) exceeds data.augment.snr_max_db ({self.snr_max_db})"
            )
        if self.noise_dir is not None and self.noise_prob > 0 and not noise_files(self.noise_dir):
            raise ValueError(f"data.augment.noise_dir: no {'/'.join(NOISE_SUFFIXES)} files in {self.noise_dir}")

    @property
    def enabled(self) -> bool:
        return any(f != 1.0 for f in self.speed_factors) or self.noise_prob > 0

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator, max_seconds: float) -> np.ndarray:
        """The clip perturbed, then noised, by draws from ``rng`` (16 kHz mono float32 in and out)."""
        factors = [f for f in self.speed_factors if len(waveform) / f <= max_seconds * SAMPLING_RATE]
        if factors:
            waveform = change_speed(waveform, float(rng.choice(factors)))
        if rng.random() < self.noise_prob:
            snr = rng.uniform(self.snr_min_db, self.snr_max_db)
            waveform = add_noise(waveform, self._noise(len(waveform), rng), snr)
        return waveform

    def _noise(self, samples: int, rng: np.random.Generator) -> np.ndarray:
        if self.noise_dir is None:
            return rng.standard_normal(samples).astype(np.float32)
        files = noise_files(self.noise_dir)
        noise = noise_audio(files[rng.integers(len(files))])
        if len(noise) < samples:  # a short recording loops under the clip
            noise = np.tile(noise, -(-samples // len(noise)))
        start = rng.integers(len(noise) - samples + 1)
        return noise[start : start + samples]


def change_speed(waveform: np.ndarray, factor: float) -> np.ndarray:
    """``waveform`` played ``factor`` times as fast (pitch moves with it): resampled to 16 kHz / factor."""
    if factor == 1.0:
        return waveform
    return soxr.resample(waveform, SAMPLING_RATE, SAMPLING_RATE / factor).astype(np.float32)


def add_noise(waveform: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``waveform`` plus ``noise`` scaled to ``snr_db`` dB below the clip's power."""
    signal, power = float(np.mean(waveform**2)), float(np.mean(noise**2))
    if signal == 0 or power == 0:
        return waveform
    scale = np.sqrt(signal / (power * 10 ** (snr_db / 10)))
    return (waveform + scale * noise).astype(np.float32)


@functools.cache
def noise_files(folder: str) -> list[str]:
    return sorted(str(p) for p in Path(folder).expanduser().rglob("*") if p.suffix.lower() in NOISE_SUFFIXES)


@functools.lru_cache(maxsize=32)  # per worker: a few recordings decoded once, not once per clip
def noise_audio(path: str) -> np.ndarray:
    return load_audio(path)
