"""A callback for time-to-accuracy runs (``benchmarks/tta.py``): after every validation of ``fit``, one JSON line
with how much training the run has done so far and what it scored."""

import json
import time
from pathlib import Path

import lightning as L
import torch


class Trajectory(L.Callback):
    """Appends ``{"step", "windows", "clips", "train_s", "val"}`` to ``path`` at each validation's end.

    ``windows`` counts the batches' rows (a packed window is one row, ``data.pack_share``), ``clips`` every clip in
    them, ``train_s`` the wall seconds since training began, validation excluded (its frequency is the benchmark's
    choice, not the config's).

    Args:
        path: the JSON-lines file to append to.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.windows = self.clips = 0
        self.start = self.validation_start = 0.0
        self.validating_s = 0.0

    def _now(self, module: L.LightningModule) -> float:
        if module.device.type == "cuda":  # the steps queued on the GPU belong to the time before this point
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start, self.validating_s = self._now(pl_module), 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self.windows += len(batch["paths"])
        self.clips += batch.get("clips", len(batch["paths"]))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validation_start = self._now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        now = self._now(pl_module)
        train_s = self.validation_start - self.start - self.validating_s
        self.validating_s += now - self.validation_start
        scores = {k.removeprefix("val/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        row = {
            "step": trainer.global_step,
            "windows": self.windows,
            "clips": self.clips,
            "train_s": train_s,
            "val": scores,
        }
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
