"""Audio without speech: generated silence, noise and music-like tones, to train and to measure writing nothing.

A fine-tune on speech alone teaches the decoder that every window holds words; on silence or noise it then invents
some. :class:`NoSpeech` (``data.no_speech``) swaps a share of training items for a generated clip labelled with no
words (the prompt, then end of text: what decoding with the forced prompt should write), and :class:`NonSpeechSet` is
a fixed set of them scored at each validation as ``val_nospeech/words``, the share of clips on which the model wrote
any words.
"""

from dataclasses import dataclass, replace

import numpy as np
from torch.utils.data import Dataset

from lightning_asr.batch import SAMPLING_RATE
from lightning_asr.data.audio import log_mel
from lightning_asr.data.windows import Draw, Source, Window

KINDS = ("silence", "noise", "music")


def non_speech(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """``seconds`` of one kind of non-speech at 16 kHz: room silence (-70 dBFS hiss), white or brown noise
    (-40 to -15 dBFS), or music-like chords (three harmonic voices, notes of 0.2-0.6 s, -30 to -12 dBFS)."""
    n = int(seconds * SAMPLING_RATE)
    if kind == "silence":
        return _at_level(rng.standard_normal(n), -70.0)
    if kind == "noise":
        white = rng.standard_normal(n)
        audio = np.cumsum(white) if rng.random() < 0.5 else white  # brown noise: the integral of white
        audio = audio - np.convolve(audio, np.ones(801) / 801, mode="same")  # no drift below 20 Hz
        return _at_level(audio, rng.uniform(-40.0, -15.0))
    if kind == "music":
        return _at_level(_chords(n, rng), rng.uniform(-30.0, -12.0))
    raise ValueError(f"non-speech kind {kind!r} is not one of {KINDS}")


def _chords(n: int, rng: np.random.Generator) -> np.ndarray:
    audio, t = np.zeros(n), 0
    while t < n:
        length = min(int(rng.uniform(0.2, 0.6) * SAMPLING_RATE), n - t)
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        time = np.arange(length) / SAMPLING_RATE
        note = sum(
            np.sin(2 * np.pi * root * ratio * harmonic * time) / harmonic
            for ratio in (1.0, 1.26, 1.5)  # a major triad
            for harmonic in (1, 2, 3)
        )
        audio[t : t + length] = note * np.exp(-3.0 * time)  # a plucked decay
        t += length
    return audio


def _at_level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(audio**2))) or 1.0
    return (audio * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def no_words(labels: list[int], tokenizer) -> list[int]:
    """``<|sot|><|lang|><|task|><|notimestamps|> text <|eot|>`` (or its timestamped form) as the same prompt with no
    words: ``<|sot|><|lang|><|task|><|notimestamps|><|eot|>``."""
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    return [*labels[:3], no_timestamps, labels[-1]]


@dataclass(frozen=True)
class NoSpeech:
    """Training on, and measuring, audio without speech (``data.no_speech``); all off by default.

    Args:
        share: the share of training items (drawn per item and epoch, seeded) swapped for generated silence, noise or
            music of a length drawn from 1 s to the clip's own, labelled with no words.
        train_empty: train on clips whose transcript is empty, toward no words, instead of skipping them.
        eval_clips: generated non-speech clips (silence, noise, music in turn; 2-15 s) scored at each validation:
            ``val_nospeech/words`` is the share on which the model wrote any words, ``val_nospeech/degenerate`` the
            share that ran to the token limit.
    """

    share: float = 0.0
    train_empty: bool = False
    eval_clips: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"data.no_speech.share: a share, from 0 to 1; got {self.share:g}")
        if self.eval_clips < 0:
            raise ValueError(f"data.no_speech.eval_clips: must be at least 0, got {self.eval_clips}")

    def __call__(self, window: Window, draw: Draw, dataset: Source, index: int, epoch: int) -> Window:
        if not self.share or draw(4).random() >= self.share:
            return window
        rng = draw(5)
        seconds = rng.uniform(1.0, max(1.0, len(window.waveform) / SAMPLING_RATE))
        audio = non_speech(KINDS[int(rng.integers(len(KINDS)))], seconds, rng)
        return replace(window, waveform=audio, labels=no_words(window.labels, dataset.processor.tokenizer), text="")


class NonSpeechSet(Dataset):
    """``size`` generated clips (the kinds in turn, 2-15 s), the same for the same seed: an evaluation set whose
    reference is no words."""

    def __init__(self, size: int, processor, language: str | None, seed: int = 0) -> None:
        self.size, self.processor, self.language, self.seed = size, processor, language, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index, 7])
        kind = KINDS[index % len(KINDS)]
        audio = non_speech(kind, rng.uniform(2.0, 15.0), rng)
        return {
            "input_features": log_mel(self.processor.feature_extractor, audio),
            "labels": None,
            "duration": len(audio) / SAMPLING_RATE,
            "path": f"nonspeech/{kind}-{index}",
            "text": "",
            "language": self.language,
            "clips": 1,
        }
