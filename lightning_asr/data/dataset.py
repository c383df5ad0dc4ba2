"""One row to model inputs: the clip decoded and checked against its rules, transformed, its log-mel features and
labels; collation."""

import functools
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset, default_collate

from lightning_asr.batch import FRAMES_PER_SECOND, LABEL_PAD, SAMPLING_RATE, Batch, Skipped
from lightning_asr.data.audio import AudioError, clip_name, header_seconds, log_mel, read_clip
from lightning_asr.data.windows import Window
from lightning_asr.text import clean_transcript

# A clip transform: (waveform, rng, longest seconds) -> waveform, e.g. ``AudioAugment``.
ClipTransform = Callable[[np.ndarray, np.random.Generator, float], np.ndarray]


@dataclass(frozen=True)
class ClipRules:
    """What a row must be to become an item. Labelled clips are held to more than unlabelled ones: a clip that is too
    short, digital silence, or cut short of its stated length cannot match its transcript, so it would teach the model
    to invent words; the same clip is still transcribed when asked."""

    max_duration_s: float = 30.0
    min_duration_s: float = 0.0  # labelled clips only
    max_label_tokens: int = 448
    with_labels: bool = True


class SpeechDataset(Dataset):
    """Decodes one clip per item, in whichever worker asks for it.

    Bad rows come back as :class:`Skipped` (or raise, with ``strict``) so one broken file costs one clip, not the run.
    Training items go through ``clip_transforms`` (each decoded clip's waveform, packed partners too) and then
    ``window_transforms`` (the item: packing, timestamped labels; ``lightning_asr.data.windows``). With either, an item
    is asked for as ``(index, epoch)`` (the sampler's ``with_epoch``), and every draw comes from an RNG seeded by
    ``seed``, the epoch and the index: the same in any worker and after a resume.
    """

    def __init__(
        self,
        rows: pa.Table,
        processor: Any,
        rules: ClipRules = ClipRules(),  # noqa: B008 (frozen)
        *,
        language: str | None = None,
        cache_dir: str | None = None,
        strict: bool = False,
        seed: int = 0,
        clip_transforms: Sequence[ClipTransform] = (),
        window_transforms: Sequence[Callable] = (),
    ) -> None:
        self.rows, self.processor, self.rules, self.language = rows, processor, rules, language
        self.cache_dir, self.strict, self.seed = cache_dir, strict, seed
        self.clip_transforms, self.window_transforms = list(clip_transforms), list(window_transforms)

    @property
    def draws(self) -> bool:
        """Whether items draw from a per-epoch RNG (the sampler then hands out ``(index, epoch)``)."""
        return bool(self.clip_transforms or self.window_transforms)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | Skipped:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            window, name = self.load(index, epoch)
        except AudioError as err:
            if self.strict:
                raise
            return err.skipped
        if window.labels is not None:

            def draw(stream: int) -> np.random.Generator:
                return np.random.default_rng([self.seed, epoch, index, stream])

            for transform in self.window_transforms:
                window = transform(window, draw, self, index, epoch)
        return {
            "input_features": log_mel(self.processor.feature_extractor, window.waveform),
            "labels": window.labels,
            "duration": len(window.waveform) / SAMPLING_RATE,
            "path": name,
            "text": window.text,
            "language": self.language,
            "clips": window.clips,
        }

    @functools.cached_property
    def _prefix_ids(self) -> tuple[int, int | None]:
        """``<|startoftranscript|>`` and this dataset's language token (looked up once, not per item)."""
        tokenizer = self.processor.tokenizer
        language = tokenizer.convert_tokens_to_ids(f"<|{self.language}|>") if self.language else None
        return tokenizer.convert_tokens_to_ids("<|startoftranscript|>"), language

    def _in_language(self, labels: list[int]) -> list[int]:
        """Labels whose prefix names this dataset's language: the processor's prefix names the target's, and a source
        in another language (``data.sources``) must train toward its own token, not learn to translate."""
        start, language = self._prefix_ids
        if language is None or len(labels) < 2 or labels[0] != start:
            return labels
        return [start, language, *labels[2:]]

    def load(self, index: int, epoch: int) -> tuple[Window, str]:
        """Row ``index`` decoded, checked and through the clip transforms, and its name; raises :class:`AudioError`."""
        audio, text = self.rows["audio"][index].as_py(), self.rows["text"][index].as_py()
        name, text, rules = clip_name(audio), clean_transcript(text), self.rules
        labels = None
        if rules.with_labels:
            labels = self._in_language(self.processor.tokenizer(text).input_ids)
            if len(labels) > rules.max_label_tokens:
                raise AudioError(name, "label_too_long", f"{len(labels)} tokens > {rules.max_label_tokens}")
        # A recording longer than the window is not decoded whole (nor cached) only to be found too long: its header
        # says so first (a fraction of a millisecond; a 2-hour WAV took a worker 4.6 GB and 17 s every epoch).
        stated = header_seconds(audio) if isinstance(audio, str) else None
        if stated is not None and stated > rules.max_duration_s + 1:
            raise AudioError(name, "too_long", f"{stated:.1f} s > {rules.max_duration_s:g} s")
        waveform = read_clip(audio, name, self.cache_dir, rules.with_labels)
        duration = len(waveform) / SAMPLING_RATE
        if duration > rules.max_duration_s:
            raise AudioError(name, "too_long", f"{duration:.1f} s > {rules.max_duration_s:g} s")
        if rules.with_labels and duration < rules.min_duration_s:
            raise AudioError(name, "too_short", f"{1000 * duration:.0f} ms < {rules.min_duration_s:g} s")
        if rules.with_labels and not waveform.any():
            raise AudioError(name, "silent", "every sample is zero")
        if self.clip_transforms:
            rng = np.random.default_rng([self.seed, epoch, index])
            for transform in self.clip_transforms:
                waveform = transform(waveform, rng, rules.max_duration_s)
        return Window(waveform, labels, text), name


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
