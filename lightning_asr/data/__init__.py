"""The data layer: an index of clips from a Common Voice release, a manifest or a datasets folder; clips decoded to
16 kHz, checked, transformed and collated into the batch the model takes (``SpeechDataModule``)."""

from lightning_asr.data.datamodule import SpeechDataModule
from lightning_asr.data.knobs import RetainedSet

__all__ = ["RetainedSet", "SpeechDataModule"]
