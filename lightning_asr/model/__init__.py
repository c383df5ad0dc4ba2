"""The model layer: Whisper loaded k-bit and LoRA-wrapped, trained on loss and validated on WER (``WhisperLoRA``),
with its knobs, decoding, loss, speed features and the PEFT adapter format."""

from lightning_asr.model.module import WhisperLoRA

__all__ = ["WhisperLoRA"]
