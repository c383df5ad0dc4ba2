"""Window transforms for labelled training items, after each clip is decoded and checked: timestamped labels
(``data.timestamp_share``) and packing several clips into one window (``data.pack_share``). Each is a small callable
``transform(window, draw, dataset) -> window``, applied in order, as lhotse applies its cut transforms; ``draw(stream)``
is the item's own RNG for that stream, seeded by the seed, the epoch and the index, so a resumed run draws the same."""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from lightning_asr.batch import SAMPLING_RATE, TIME_STEP_S
from lightning_asr.data.audio import AudioError

Draw = Callable[[int], np.random.Generator]
PACK_GAP_S = (0.3, 1.0)  # silence after each clip of a packed window


@dataclass(frozen=True)
class Window:
    """One training item before its features: audio, label tokens, transcript and how many clips it holds."""

    waveform: np.ndarray
    labels: list[int] | None
    text: str
    clips: int = 1


class Source(Protocol):
    """What a window transform may ask of the dataset it runs in."""

    processor: Any
    rules: Any  # lightning_asr.data.dataset.ClipRules: max_duration_s, max_label_tokens

    def __len__(self) -> int: ...

    def load(self, index: int, epoch: int) -> tuple[Window, str]: ...


@dataclass(frozen=True)
class Pack:
    """For a ``share`` of training clips, a 30 s window of ``clips`` (fewest, most) clips: this one first, the others
    drawn from the split, each followed by a pause, labelled with every clip's start and end (:func:`pack`). A partner
    that fails to load is left out here; it is skipped and counted as its own item."""

    share: float
    clips: tuple[int, int] = (2, 4)

    def __call__(self, window: Window, draw: Draw, dataset: Source, index: int, epoch: int) -> Window:
        if not self.share or draw(2).random() >= self.share:
            return window
        rng = draw(3)
        parts = [(window.waveform, window.labels, window.text)]
        fewest, most = self.clips
        for partner in rng.integers(0, len(dataset), int(rng.integers(fewest - 1, most))):
            if partner == index:
                continue
            try:
                other, _ = dataset.load(int(partner), epoch)
            except AudioError:
                continue
            parts.append((other.waveform, other.labels, other.text))
        gaps = rng.uniform(*PACK_GAP_S, len(parts))
        window_s = min(dataset.rules.max_duration_s, 30.0)  # timestamp tokens end at 30.00 s
        return Window(*pack(parts, gaps, dataset.processor.tokenizer, window_s, dataset.rules.max_label_tokens))


@dataclass(frozen=True)
class Timestamps:
    """For a ``share`` of training clips, labels in Whisper's timestamped form (:func:`with_timestamps`); a packed
    window is timestamped already."""

    share: float

    def __call__(self, window: Window, draw: Draw, dataset: Source, index: int, epoch: int) -> Window:
        if not self.share or window.clips > 1 or draw(1).random() >= self.share:
            return window
        duration = len(window.waveform) / SAMPLING_RATE
        return replace(window, labels=with_timestamps(window.labels, duration, dataset.processor.tokenizer))


def pack(
    clips: list[tuple[np.ndarray, list[int], str]], gaps: np.ndarray, tokenizer: Any, window_s: float, max_tokens: int
) -> tuple[np.ndarray, list[int], str, int]:
    """Clips joined into one window, each followed by its gap, labelled in Whisper's timestamped form:
    ``<|sot|><|lang|><|task|><|0.00|> first <|t1|><|t2|> second <|t3|> … <|eot|>``, every clip's start
    and end on Whisper's 20 ms grid. The first clip starts at 0, as a single clip's window does; clips
    that would end past ``window_s`` or take the labels past ``max_tokens`` are left out. Returns the
    window, its labels, the clips' texts joined and how many clips it holds.

    Whisper learned segment times from windows of several utterances; an adapter trained only on
    one clip a window writes about one segment per window afterwards (benchmarks/README.md, "Timestamps").
    """
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    if no_timestamps not in clips[0][1]:  # a tokenizer without Whisper's prefix: nothing to place times in
        return (*clips[0], 1)
    first = no_timestamps + 1  # <|0.00|>
    prefix = clips[0][1][: clips[0][1].index(no_timestamps)]
    audio, tokens, texts, t = [], [], [], 0.0
    for (waveform, labels, text), gap in zip(clips, gaps):
        end = t + len(waveform) / SAMPLING_RATE
        words = labels[labels.index(no_timestamps) + 1 : -1]
        if audio and (end > window_s or len(prefix) + len(tokens) + len(words) + 3 > max_tokens):
            continue
        tokens += [first + int(round(t / TIME_STEP_S)), *words, first + int(round(min(end, window_s) / TIME_STEP_S))]
        pause = np.zeros(int(gap * SAMPLING_RATE), np.float32)
        audio += [waveform, pause]
        texts.append(text)
        t = end + len(pause) / SAMPLING_RATE
    joined = np.concatenate(audio[:-1])  # no trailing pause: the window ends with the last clip
    return joined, [*prefix, *tokens, clips[0][1][-1]], " ".join(texts), len(texts)


def with_timestamps(labels: list[int], duration: float, tokenizer: Any) -> list[int]:
    """``<|sot|><|lang|><|task|><|notimestamps|> text <|eot|>`` as Whisper's timestamped form of one
    segment, ``<|sot|><|lang|><|task|><|0.00|> text <|end|><|eot|>``, the end the clip's length on
    Whisper's 20 ms grid (at most 30.00 s)."""
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    if no_timestamps not in labels:  # already timestamped, or a tokenizer without the prefix
        return labels
    first = no_timestamps + 1  # <|0.00|>; <|t|> is first + t / TIME_STEP_S
    at = labels.index(no_timestamps)
    end = first + min(int(round(duration / TIME_STEP_S)), int(round(30.0 / TIME_STEP_S)))
    return [*labels[:at], first, *labels[at + 1 : -1], end, labels[-1]]
