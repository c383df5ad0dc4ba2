"""What the layers hand each other, defined below all of them: the data's batch and its bad rows, label padding,
and Whisper's fixed rates. ``data`` builds these, ``model`` and the callbacks read them, ``deploy`` decodes to them."""

from dataclasses import dataclass
from typing import TypedDict

import torch

SAMPLING_RATE = 16_000  # Whisper hears 16 kHz
FRAMES_PER_SECOND = 100  # Whisper's log-mel: one frame per 10 ms (a 160-sample hop)
TIME_STEP_S = 0.02  # one timestamp token step
LABEL_PAD = -100  # label padding: transformers' loss, and ours (model/loss.py), ignore it


@dataclass
class Skipped:
    """A clip (or index row) that was dropped, with the reason it is counted under (``missing``,
    ``empty``, ``truncated`` …)."""

    path: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


class Batch(TypedDict, total=False):
    """What the data hands the model: the contract between ``data`` and ``module``."""

    input_features: torch.Tensor  # (clips, mel bins, frames): log-mel, 30 s windows or trimmed
    labels: torch.Tensor  # (clips, tokens), -100 where padded; absent for unlabelled clips (predict)
    durations: torch.Tensor  # (clips,) seconds of audio
    paths: list[str]  # each clip's file (or index name)
    texts: list[str]  # each clip's cleaned transcript ("" unlabelled)
    language: str | None  # the dataset's language code: the retained set's differs from the target's
    clips: int  # clips in the batch: more than its rows where windows are packed (data.pack_share)
    skipped: list[Skipped]  # rows of this batch that failed; counted by the DataModule, then removed
