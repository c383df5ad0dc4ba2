"""Fine-tune Whisper with k-bit quantization and LoRA, on Lightning."""

import logging

# bitsandbytes notes on CPU that an optional kernel package is absent: true, and not actionable.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from lightning_asr.callbacks import AdapterCheckpoint, save_adapter
from lightning_asr.data import SpeechDataModule
from lightning_asr.module import WhisperLoRA

__all__ = ["AdapterCheckpoint", "SpeechDataModule", "WhisperLoRA", "save_adapter"]
__version__ = "0.1.0"
