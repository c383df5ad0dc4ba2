"""Callbacks: adapter-only checkpoints in PEFT format, and throughput in samples and audio seconds."""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


def save_adapter(pl_module: L.LightningModule, path: Path, metrics: dict | None = None) -> None:
    """Write a self-contained adapter folder atomically: a crash mid-write leaves the old one intact.

    The folder holds ``adapter_model.safetensors`` + ``adapter_config.json`` (plain PEFT, loadable
    with ``PeftModel.from_pretrained(base, path)``), the processor files, and ``lightning_asr.json``
    with the language, task and base the adapter was trained for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    hp = pl_module.hparams
    pl_module.model.save_pretrained(tmp)
    pl_module.processor.save_pretrained(tmp)
    info = {
        "base_model": hp.model,
        "from_config": hp.from_config,
        "init_seed": hp.init_seed,
        "language": pl_module.language_name(),
        "task": hp.task,
        "quantization": hp.quantization,
        "trim_encoder": hp.trim_encoder,
        "global_step": pl_module.global_step,
        "metrics": metrics or {},
    }
    (tmp / "lightning_asr.json").write_text(json.dumps(info, indent=2))
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


class AdapterCheckpoint(L.Callback):
    """Saves the adapter after each validation: ``last/`` always, ``best/`` and the top-k by a metric.

    Args:
        dirpath: folder for the adapters; ``None`` puts them in the logger's run folder (``adapters/``).
        monitor: logged metric that ranks adapters.
        mode: ``min`` when lower is better (WER), ``max`` otherwise.
        save_top_k: ranked adapters kept as ``step-N/`` (``best/`` is always the top one); 0 keeps none.
    """

    def __init__(self, dirpath: str | None = None, monitor: str = "val/wer", mode: Literal["min", "max"] = "min", save_top_k: int = 1) -> None:
        self.dirpath, self.monitor, self.mode, self.save_top_k = dirpath, monitor, mode, save_top_k
        self.ranked: list[tuple[float, str]] = []
        self._last_step: int | None = None

    def directory(self, trainer: L.Trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "adapters"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run without validation (or stopped between validations) still leaves its adapter;
        # one that just validated has written this step's last/ already.
        if trainer.global_step > 0 and self._last_step != trainer.global_step:
            self._save_last(trainer, pl_module)

    @rank_zero_only
    def _save_last(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        save_adapter(pl_module, self.directory(trainer) / "last", metrics)
        self._last_step = trainer.global_step
        return metrics

    @rank_zero_only
    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        root = self.directory(trainer)
        metrics = self._save_last(trainer, pl_module)
        if self.monitor not in metrics or self.save_top_k == 0:
            return
        score = metrics[self.monitor] if self.mode == "min" else -metrics[self.monitor]
        name = f"step-{trainer.global_step}"
        if len(self.ranked) >= self.save_top_k and score >= self.ranked[-1][0]:
            return
        save_adapter(pl_module, root / name, metrics)
        self.ranked = sorted(self.ranked + [(score, name)])
        for _, dropped in self.ranked[self.save_top_k :]:
            shutil.rmtree(root / dropped, ignore_errors=True)
        self.ranked = self.ranked[: self.save_top_k]
        if self.ranked[0][1] == name:
            save_adapter(pl_module, root / "best", metrics)
            log.info("adapter: new best %s = %.4f -> %s", self.monitor, metrics[self.monitor], root / "best")

    def state_dict(self) -> dict:
        return {"ranked": self.ranked}

    def load_state_dict(self, state_dict: dict) -> None:
        self.ranked = [tuple(x) for x in state_dict.get("ranked", [])]


def _batch_size(batch: dict) -> int:
    return len(batch["paths"])


def _audio_seconds(batch: dict) -> float:
    return float(batch["durations"].sum())


class SpeechThroughput(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` for speech batches.

    Logs ``train/device/samples_per_sec``, ``train/device/items_per_sec`` (here: seconds of audio per
    second) and, on GPUs it knows, ``train/device/mfu`` from the module's ``flops_per_batch``; under
    DDP also the all-GPU ``train/samples_per_sec`` and ``train/items_per_sec``.

    Args:
        window_size: batches averaged over.
    """

    def __init__(self, window_size: int = 20) -> None:
        super().__init__(batch_size_fn=_batch_size, length_fn=_audio_seconds, window_size=window_size)
