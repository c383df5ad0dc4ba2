"""Fine-tune Whisper with k-bit quantization and LoRA, on Lightning.

Layers, each importing only from those below it: ``batch`` and ``text`` (what every layer shares); ``model``
(WhisperLoRA and what builds it); ``data`` (SpeechDataModule: index, clips, batches); ``deploy`` (transcribe, export);
and the run itself: ``cli``, ``callbacks``, ``checkpoint``.
"""

import logging

# peft imports torchao where it is installed (the [fp8] extra), and torchao then names every optional kernel library
# the machine cannot load, and torch each of its enums: on every command, about nothing lightning-asr uses or a user
# can act on. model.speed.fp8 checks what it needs itself (fp8.require).
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").addFilter(lambda record: "is an Enum subclass" not in str(record.msg))
# bitsandbytes notes on CPU that an optional kernel package is absent: true, and not actionable.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# ... and logs, on every int8 matmul with fp32 inputs, that they are cast to fp16: true, expected,
# and thousands of lines an epoch. Only that message is dropped.
logging.getLogger("bitsandbytes.autograd._functions").addFilter(
    lambda record: not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")
)
# Whisper's generate() sets max_length itself, then transformers warns at every validation batch that
# our max_new_tokens overrides it: which is what we ask for.
logging.getLogger("transformers.generation.utils").addFilter(
    lambda record: not str(record.msg).startswith("Both `max_new_tokens`")
)

from lightning_asr import _compat
from lightning_asr.callbacks import AdapterCheckpoint
from lightning_asr.data import SpeechDataModule
from lightning_asr.model import WhisperLoRA
from lightning_asr.model.adapter import save_adapter

_compat.install()  # lightning_asr.module, lightning_asr.args … (checkpoints and code from before the folders)

__all__ = ["AdapterCheckpoint", "SpeechDataModule", "WhisperLoRA", "save_adapter"]
__version__ = "0.1.0"
