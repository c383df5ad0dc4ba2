"""The data's grouped knobs and their checks: the retained set (``data.retain``), and every argument of
``SpeechDataModule`` against its range and the others, at parse time. Waveform augmentation (``data.augment``) is in
``transforms.py``."""

import logging
from dataclasses import dataclass
from typing import Literal

from lightning_asr.data.sources import DataConfigError

log = logging.getLogger(__name__)

Source = Literal["common_voice", "spontaneous", "manifest", "hf", "shards"]


@dataclass
class RetainedSet:
    """A Common Voice split in another language, validated beside the target at every validation.

    Args:
        path: the release folder (holding ``<locale>/``) or the locale folder itself.
        locale: its locale folder, e.g. ``en``.
        language: its language (name or code); validation decodes it in this language.
        split: the split to score.
        max_samples: score only its first N rows; ``None`` for all.
    """

    path: str
    locale: str = "en"
    language: str = "English"
    split: str = "test"
    max_samples: int | None = 200


def check_arguments(knobs: dict) -> None:
    """``SpeechDataModule``'s arguments against their ranges and each other, at parse time: one line naming the
    field."""
    for field, least in (
        ("batch_size", 1),
        ("eval_batch_size", 1),
        ("num_workers", 0),
        ("max_samples", 1),
        ("group_window", 1),
    ):
        if knobs[field] is not None and knobs[field] < least:
            raise DataConfigError(f"data.{field}: must be at least {least}, got {knobs[field]}")
    for field in ("timestamp_share", "full_window_share", "pack_share"):
        if not 0.0 <= knobs[field] <= 1.0:
            raise DataConfigError(f"data.{field}: a share, from 0 to 1; got {knobs[field]:g}")
    fewest, most = knobs["pack_clips"]
    if not 2 <= fewest <= most:
        raise DataConfigError(
            f"data.pack_clips: [fewest, most] clips a packed window holds, 2 <= fewest <= most; got {[fewest, most]}"
        )
    if knobs["full_window_share"] and not knobs["trim_encoder"]:
        log.warning("data.full_window_share: no effect without the trimmed encoder (model.speed.trim_encoder)")
    longest, shortest = knobs["max_duration_s"], knobs["min_duration_s"]
    if longest is not None and longest <= shortest:
        raise DataConfigError(f"data.max_duration_s: must exceed data.min_duration_s ({shortest:g}), got {longest:g}")
