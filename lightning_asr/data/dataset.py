"""One row to model inputs: the clip decoded and checked, its log-mel features and labels; collation."""

import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset, default_collate

from lightning_asr.batch import FRAMES_PER_SECOND, LABEL_PAD, SAMPLING_RATE, TIME_STEP_S, Batch, Skipped
from lightning_asr.data.audio import AudioError, clip_name, header_seconds, log_mel, read_clip
from lightning_asr.data.transforms import AudioAugment
from lightning_asr.text import clean_transcript


class SpeechDataset(Dataset):
    """Decodes one clip per item, in whichever worker asks for it.

    Bad rows come back as :class:`Skipped` (or raise, with ``strict``) so one broken file costs one
    clip, not the run. Labelled clips are held to more than unlabelled ones: a clip that is too
    short, digital silence, or cut short of its stated length cannot match its transcript, so it
    would teach the model to invent words; the same clip is still transcribed when asked.

    With ``augment`` (training only), an item is asked for as ``(index, epoch)`` (the sampler's
    ``with_epoch``), and the clip's augmentation is drawn from an RNG seeded by ``seed``, epoch and index.
    ``timestamp_share`` and ``pack_share`` are drawn the same way (see :func:`pack`).
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
        augment: AudioAugment | None = None,
        seed: int = 0,
        timestamp_share: float = 0.0,
        pack_share: float = 0.0,
        pack_clips: tuple[int, int] = (2, 4),
    ) -> None:
        self.rows, self.processor, self.language = rows, processor, language
        self.augment, self.seed = (augment if augment and augment.enabled else None), seed
        self.max_duration_s, self.max_label_tokens, self.min_duration_s = (
            max_duration_s,
            max_label_tokens,
            min_duration_s,
        )
        self.strict, self.cache_dir, self.with_labels = strict, cache_dir, with_labels
        self.timestamp_share, self.pack_share, self.pack_clips = timestamp_share, pack_share, pack_clips

    def __len__(self) -> int:
        return len(self.rows)

    def _row(self, index: int) -> tuple[Any, str]:
        return self.rows["audio"][index].as_py(), self.rows["text"][index].as_py()

    def __getitem__(self, key: int | tuple[int, int]) -> dict | Skipped:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            waveform, labels, text, name = self._clip(index, epoch)
        except AudioError as err:
            if self.strict:
                raise
            return err.skipped
        duration, clips = len(waveform) / SAMPLING_RATE, 1
        if (
            labels is not None
            and self.pack_share
            and np.random.default_rng([self.seed, epoch, index, 2]).random() < self.pack_share
        ):
            waveform, labels, text, clips = self._pack(index, epoch, waveform, labels, text)
            duration = len(waveform) / SAMPLING_RATE
        elif (
            labels is not None
            and self.timestamp_share
            and np.random.default_rng([self.seed, epoch, index, 1]).random() < self.timestamp_share
        ):
            labels = with_timestamps(labels, duration, self.processor.tokenizer)
        features = log_mel(self.processor.feature_extractor, waveform)
        return {
            "input_features": features,
            "labels": labels,
            "duration": duration,
            "path": name,
            "text": text,
            "language": self.language,
            "clips": clips,
        }

    def _clip(self, index: int, epoch: int) -> tuple[np.ndarray, list[int] | None, str, str]:
        """Row ``index`` decoded, checked and augmented: (waveform, labels, text, name); raises :class:`AudioError`."""
        audio, text = self._row(index)
        name = clip_name(audio)
        text = clean_transcript(text)
        labels = None
        if self.with_labels:
            labels = self.processor.tokenizer(text).input_ids
            if len(labels) > self.max_label_tokens:
                raise AudioError(name, "label_too_long", f"{len(labels)} tokens > {self.max_label_tokens}")
        # A recording longer than the window is not decoded whole (nor cached) only to be found too long: its header
        # says so first (a fraction of a millisecond; a 2-hour WAV took a worker 4.6 GB and 17 s every epoch).
        stated = header_seconds(audio) if isinstance(audio, str) else None
        if stated is not None and stated > self.max_duration_s + 1:
            raise AudioError(name, "too_long", f"{stated:.1f} s > {self.max_duration_s:g} s")
        waveform = read_clip(audio, name, self.cache_dir, self.with_labels)
        duration = len(waveform) / SAMPLING_RATE
        if duration > self.max_duration_s:
            raise AudioError(name, "too_long", f"{duration:.1f} s > {self.max_duration_s:g} s")
        if self.with_labels and duration < self.min_duration_s:
            raise AudioError(name, "too_short", f"{1000 * duration:.0f} ms < {self.min_duration_s:g} s")
        if self.with_labels and not waveform.any():
            raise AudioError(name, "silent", "every sample is zero")
        if self.augment is not None:
            waveform = self.augment(waveform, np.random.default_rng([self.seed, epoch, index]), self.max_duration_s)
        return waveform, labels, text, name

    def _pack(
        self, index: int, epoch: int, waveform: np.ndarray, labels: list[int], text: str
    ) -> tuple[np.ndarray, list[int], str, int]:
        """Clip ``index`` first in a window with ``pack_clips`` clips in all, the others drawn from this split
        (see :func:`pack`). A partner that fails to load is left out here; it is skipped and counted as its own item."""
        rng = np.random.default_rng([self.seed, epoch, index, 3])
        clips = [(waveform, labels, text)]
        fewest, most = self.pack_clips
        for partner in rng.integers(0, len(self), int(rng.integers(fewest - 1, most))):
            if partner == index:
                continue
            try:
                clips.append(self._clip(int(partner), epoch)[:3])
            except AudioError:
                continue
        gaps = rng.uniform(*PACK_GAP_S, len(clips))
        window = min(self.max_duration_s, 30.0)  # timestamp tokens end at 30.00 s
        return pack(clips, gaps, self.processor.tokenizer, window, self.max_label_tokens)


# Silence after each clip of a packed window.
PACK_GAP_S = (0.3, 1.0)


def pack(
    clips: list[tuple[np.ndarray, list[int], str]], gaps: np.ndarray, tokenizer: Any, window_s: float, max_tokens: int
) -> tuple[np.ndarray, list[int], str, int]:
    """Clips joined into one window, each followed by its gap, labelled in Whisper's timestamped form:
    ``<|sot|><|lang|><|task|><|0.00|> first <|t1|><|t2|> second <|t3|> … <|eot|>``, every clip's start
    and end on Whisper's 20 ms grid. The first clip starts at 0, as a single clip's window does; clips
    that would end past ``window_s`` or take the labels past ``max_tokens`` are left out. Returns the
    window, its labels, the clips' texts joined and how many clips it holds.

    Whisper learned segment times from windows of several utterances; an adapter trained only on
    one clip a window writes about one segment per window afterwards (benchmarks/results/timestamps.md).
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


def collate(
    items: list[dict | Skipped], decoder_start_token_id: int, trim_encoder: bool = False, full_window_share: float = 0.0
) -> Batch:
    """Stack features once, pad labels with -100, and carry skipped rows out for counting.

    The decoder start token is stripped when every row begins with it: the model prepends it
    itself when it shifts the labels right (as the guide's collator does). ``trim_encoder`` cuts
    the mel frames to the longest clip in the batch (rounded up to 1 s) for the trimmed encoder,
    except in a ``full_window_share`` of batches, drawn from the batch's clip names (the same batch
    draws the same in any worker and after a resume).
    """
    good = [x for x in items if not isinstance(x, Skipped)]
    batch = Batch(skipped=[x for x in items if isinstance(x, Skipped)])
    if not good:
        return batch | {
            "input_features": torch.empty(0),
            "paths": [],
            "texts": [],
            "durations": torch.empty(0),
            "clips": 0,
        }
    frames = good[0]["input_features"].shape[-1]
    keep_full = (
        full_window_share > 0 and zlib.crc32("\n".join(x["path"] for x in good).encode()) / 2**32 < full_window_share
    )
    if trim_encoder and not keep_full:
        frames = min(frames, FRAMES_PER_SECOND * int(np.ceil(max(x["duration"] for x in good))))
    # Trimmed before stacking: stacking 256 whole windows (245 MB of a worker's fresh memory) and
    # then cutting took about as long as building the clips. default_collate stacks straight into
    # shared memory inside a DataLoader worker, so the batch is not copied again on its way out.
    batch["input_features"] = default_collate([torch.from_numpy(x["input_features"][..., :frames]) for x in good])
    batch["durations"] = torch.tensor([x["duration"] for x in good])
    batch["paths"] = [x["path"] for x in good]
    batch["texts"] = [x["text"] for x in good]
    batch["clips"] = sum(x.get("clips", 1) for x in good)
    batch["language"] = good[0].get("language")  # a dataset's clips share one language
    if good[0]["labels"] is not None:
        labels = [x["labels"] for x in good]
        if all(row and row[0] == decoder_start_token_id for row in labels):
            labels = [row[1:] for row in labels]
        padded = torch.full((len(labels), max(map(len, labels))), LABEL_PAD, dtype=torch.long)
        for i, row in enumerate(labels):
            padded[i, : len(row)] = torch.tensor(row)
        batch["labels"] = padded
    return batch
