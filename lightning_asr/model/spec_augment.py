"""SpecAugment on the log-mel features during training: transformers' own Whisper masking, in the model."""

from dataclasses import dataclass

import torch
from transformers import WhisperConfig

from lightning_asr.batch import FRAMES_PER_SECOND


@dataclass
class SpecAugment:
    """Time and frequency masks on training features (SpecAugment), as ``model.spec_augment.*``.

    Whisper's ``_mask_input_features`` draws them (the config's ``mask_time_prob`` …), in training
    mode only: validation, test and predict never see a mask. Time masks fall on each clip's audio,
    not on the window's padding. Masks come from numpy's RNG, which checkpoints keep, so a resumed run
    draws the same ones. Off (both probabilities 0) by default.

    Args:
        time_prob: share of each clip's frames that starts a time mask (0 turns time masks off).
        time_length: frames (10 ms each) per time mask.
        time_min_masks: time masks per clip at least, when ``time_prob`` > 0.
        feature_prob: share of the mel bins that starts a frequency mask (0 turns them off).
        feature_length: mel bins per frequency mask.
        feature_min_masks: frequency masks at least, when ``feature_prob`` > 0.
    """

    time_prob: float = 0.0
    time_length: int = 10
    time_min_masks: int = 2
    feature_prob: float = 0.0
    feature_length: int = 10
    feature_min_masks: int = 0

    def __post_init__(self) -> None:
        for name in ("time_prob", "feature_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.spec_augment.{name}: must be in [0, 1), got {getattr(self, name)}")
        for name in ("time_length", "feature_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.spec_augment.{name}: must be at least 1, got {getattr(self, name)}")

    @property
    def enabled(self) -> bool:
        return self.time_prob > 0 or self.feature_prob > 0

    def apply(self, config: WhisperConfig) -> None:
        """Set the base's config so its forward masks in training mode."""
        config.apply_spec_augment = self.enabled
        config.mask_time_prob, config.mask_time_length = self.time_prob, self.time_length
        config.mask_time_min_masks = self.time_min_masks
        config.mask_feature_prob, config.mask_feature_length = self.feature_prob, self.feature_length
        config.mask_feature_min_masks = self.feature_min_masks


def audio_mask(durations: torch.Tensor, frames: int) -> torch.Tensor:
    """(clips, frames) 1 where a frame holds audio: what Whisper's masking takes as ``attention_mask``."""
    lengths = (durations * FRAMES_PER_SECOND).ceil().clamp(max=frames).long()
    return (torch.arange(frames, device=durations.device)[None, :] < lengths[:, None].to(durations.device)).long()
