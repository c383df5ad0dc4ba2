"""Callbacks: adapter-only checkpoints (the format lives in ``model/adapter.py``), validation's report (example
transcripts, the run's WER line), throughput in samples and audio frames, and a progress bar that counts the steps
toward ``max_steps``."""

import contextlib
import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Literal

import jiwer
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_asr.batch import FRAMES_PER_SECOND, Batch
from lightning_asr.model.adapter import save_adapter
from lightning_asr.text import normalize, score_metric

log = logging.getLogger(__name__)


class AdapterCheckpoint(L.Callback):
    """Saves the adapter after each validation: ``last/`` always, ``best/`` and the top-k by a metric.
    On SIGTERM during ``fit`` it also writes the resume checkpoint (``last.ckpt`` of each
    ``ModelCheckpoint`` with ``save_last``) and ``last/`` at the step the run stopped.

    Args:
        dirpath: folder for the adapters; ``None`` puts them in the logger's run folder (``adapters/``).
        monitor: logged metric that ranks adapters; ``auto`` is the normalised WER (``val/wer_norm``: an
            all-caps corpus scored case-sensitively ranks its adapters by case), or CER (``val/cer``) for a
            language written without spaces.
        mode: ``min`` when lower is better (WER), ``max`` otherwise.
        save_top_k: ranked adapters kept as ``step-N/`` (``best/`` is always the top one); 0 keeps none.
        overwrite: let a new run (not a resumed one) write into a folder that already holds
            another run's adapters. Off, such a run stops before it trains.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str = "auto",
        mode: Literal["min", "max"] = "min",
        save_top_k: int = 1,
        overwrite: bool = False,
    ) -> None:
        self.dirpath, self.monitor, self.mode, self.save_top_k = dirpath, monitor, mode, save_top_k
        self.overwrite = overwrite
        self._created = time.time()  # files of the run folder older than this are not this command's
        self.ranked: list[tuple[float, str]] = []
        self._last_step: int | None = None
        self._root: Path | None = None
        self._sigterm = False

    def directory(self, trainer: L.Trainer) -> Path:
        """The adapters' folder. Under DDP ``trainer.log_dir`` is a collective (rank 0 broadcasts it): the first call
        must come from every rank, and the saves, on rank 0 alone, use what it found."""
        if self._root is None:
            self._root = (
                Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or trainer.default_root_dir) / "adapters"
            )
        return self._root

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not in setup(): only now does the trainer know whether it resumed from a checkpoint.
        # The CLI asks before the model loads (ASRCLI.before_fit); this catches a plain trainer.fit().
        self._root = None  # a new fit may log to a new version folder
        self.check_not_taken(trainer, resuming=bool(trainer.ckpt_path))
        if self.monitor == "auto":
            self.monitor = score_metric(getattr(pl_module, "language", None))
        rank_zero_info(
            f"adapter: best/ is the adapter of the lowest {self.monitor}"
            if self.mode == "min"
            else f"adapter: best/ is the adapter of the highest {self.monitor}"
        )
        for callback in trainer.checkpoint_callbacks:  # marks the run folder as a training run (--ckpt_path last)
            if isinstance(callback, ModelCheckpoint) and callback.dirpath and trainer.is_global_zero:
                Path(callback.dirpath).mkdir(parents=True, exist_ok=True)

    def check_not_taken(self, trainer: L.Trainer, resuming: bool) -> None:
        """Refuse a new run whose folder already holds another run's adapters."""
        root = self.directory(trainer)
        if resuming or self.overwrite or not root.is_dir():
            return
        found = sorted(p.name for p in root.iterdir() if (p / "adapter_config.json").is_file())
        if found:
            raise FileExistsError(
                f"adapter_checkpoint.dirpath: {root} already holds another run's adapters ({', '.join(found)}). "
                "Resume that run with --ckpt_path last, choose another --adapter_checkpoint.dirpath, or pass "
                "--adapter_checkpoint.overwrite true to replace them."
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run without validation (or stopped between validations) still leaves its adapter;
        # one that just validated has written this step's last/ already.
        if trainer.global_step > 0 and self._last_step != trainer.global_step:
            self._save_last(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Under DDP, Lightning 2.6's own SIGTERM handler broadcasts from inside the handler (pairing with whatever
        # collective the other ranks are in) and each rank stops on its own flag, so ranks could stop at different
        # steps and wait on each other's collectives (a 2-process run hung). Here a signal only marks its rank; the
        # ranks agree at each step's end (on_train_batch_end), and Lightning then stops every one after that step.
        # Lightning's teardown puts the handler it found back.
        self._sigterm = False
        if trainer.world_size > 1:
            signal.signal(signal.SIGTERM, self._mark_sigterm)

    def _mark_sigterm(self, signum: int, frame: object) -> None:
        log.info("SIGTERM received: every rank stops after the step they agree on")
        self._sigterm = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self._sigterm, all=False):
            trainer._signal_connector.received_sigterm = True  # the flag Lightning stops on at this step's end

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, Exception) and trainer.global_step == 0 and not trainer.ckpt_path:  # not a kill
            remove_unused_run_folder(trainer, self._created)
        # SIGTERM is what kill, SLURM, Kubernetes and a spot instance's notice send: Lightning stops at the end of
        # the step, a consistent point, so the steps since the last periodic checkpoint are kept. Ctrl-C is not
        # handled: it can land inside the optimizer step.
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or trainer.global_step == 0:
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
                path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
                trainer.save_checkpoint(path)  # every rank: it synchronises; rank 0 writes
                rank_zero_info(
                    f"SIGTERM: stopped at step {trainer.global_step}, saved to {path}; "
                    "the same command with --ckpt_path last resumes it"
                )
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


@rank_zero_only
def remove_unused_run_folder(trainer: L.Trainer, since: float) -> None:
    """A command that failed before its first step (a missing file, a bad knob) leaves no ``version_N`` behind: the
    run folder goes if all it holds is what this command wrote there (config, hyperparameters, empty logs) and no
    checkpoint or adapter; ``--ckpt_path last`` then finds the run before it."""
    folder = Path(trainer.log_dir) if trainer.logger is not None and trainer.log_dir else None
    if folder is None or not folder.is_dir():
        return
    files = [p for p in folder.rglob("*") if p.is_file()]
    ours = all(
        p.stat().st_mtime >= since
        and (p.name in ("config.yaml", "hparams.yaml") or p.name.startswith("events.out.tfevents."))
        for p in files
    )
    if ours:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # runs/<name>/ too, where that run was its only one
            folder.parent.rmdir()
        log.info("removed %s: the run stopped before its first step", folder)


def _batch_size(batch: Batch) -> int:
    # Clips, not rows: a packed window (data.pack_share) trains on each of its clips.
    return batch.get("clips", len(batch["paths"]))


def _audio_frames(batch: Batch) -> int:
    # Whisper's 10 ms frames, at least one a clip: Lightning's throughput needs lengths >= samples,
    # and a batch of eight 0.3 s spoken digits holds fewer seconds (2.4) than clips.
    return int((batch["durations"] * FRAMES_PER_SECOND).round().clamp(min=1).sum())


class ValidationReport(L.Callback):
    """What validation shows a person: a table of example transcripts in TensorBoard (reference, prediction and their
    substitutions, deletions and insertions after normalisation) and, when fit ends, one line of WER and CER from the
    first validation to the last, across resumes. Reads what ``WhisperLoRA``'s evaluation steps return."""

    def __init__(self) -> None:
        self.examples: list[tuple[str, str]] = []
        self.history: list[tuple[int, float, float]] = []  # (step, val/wer, val/cer), checkpointed

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.examples = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: list | None,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx == 0:  # the target language, not the retained set
            self._keep(pl_module, outputs)

    # A test run keeps its examples as validation does (one dataloader: the target language).
    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = on_validation_batch_end

    def _keep(self, pl_module: L.LightningModule, pairs: list | None) -> None:
        room = getattr(pl_module.hparams, "log_examples", 0) - len(self.examples)
        self.examples += list(pairs or [])[: max(room, 0)]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log_examples(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_examples(trainer, pl_module, "test")

    @rank_zero_only
    def _log_examples(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if not self.examples or not hasattr(experiment, "add_text"):
            return
        rows = ["| reference | prediction | S | D | I |", "|---|---|---|---|---|"]
        code = getattr(pl_module, "language", None)
        for ref, pred in self.examples:
            out = jiwer.process_words(normalize(ref, code) or "∅", normalize(pred, code) or "∅")
            rows.append(f"| {ref} | {pred} | {out.substitutions} | {out.deletions} | {out.insertions} |")
        experiment.add_text(f"{stage}/examples", "\n".join(rows), trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if not trainer.sanity_checking and "val/wer" in metrics and "val/cer" in metrics:
            self.history.append((trainer.global_step, float(metrics["val/wer"]), float(metrics["val/cer"])))

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.history:
            (step0, wer0, cer0), (step1, wer1, cer1) = self.history[0], self.history[-1]
            print(
                f"WER: {100 * wer0:.1f}% at step {step0} -> {100 * wer1:.1f}% at step {step1} "
                f"(CER {100 * cer0:.1f}% -> {100 * cer1:.1f}%)",
                flush=True,
            )

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [tuple(row) for row in state_dict.get("history", [])]

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if "wer_history" in checkpoint:  # written by the module before this callback held the history
            self.history = [tuple(row) for row in checkpoint["wer_history"]]


class SpeechThroughput(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` for speech batches.

    Logs ``train/device/samples_per_sec`` (clips: a packed window counts each of its clips), ``train/device/items_per_sec`` (here: 10 ms frames of
    audio per second; divided by 100, seconds of audio per second) and, on GPUs it knows, ``train/device/mfu`` from the module's ``flops_per_batch``; under
    DDP also the all-GPU ``train/samples_per_sec`` and ``train/items_per_sec``.

    Args:
        window_size: batches averaged over.
    """

    def __init__(self, window_size: int = 20) -> None:
        super().__init__(batch_size_fn=_batch_size, length_fn=_audio_frames, window_size=window_size)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Batch, *args
    ) -> None:
        if _batch_size(batch):  # every clip of the batch was skipped: no samples, no step to time
            super().on_train_batch_end(trainer, pl_module, outputs, batch, *args)


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, counting optimizer steps toward ``trainer.max_steps`` when it
    is set (one bar for the whole run, labelled with the epoch) instead of restarting every epoch.
    Where the output is not a terminal (a log file, a batch job), where a bar shows nothing until the end, a line
    every ``trainer.log_every_n_steps`` steps says the step, epoch and the bar's metrics instead."""

    _line_step = -1

    def _steps(self) -> int:
        return max(0, self.trainer.max_steps)

    @property
    def total_train_batches(self) -> int | float:
        return self._steps() or super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if not self._steps():
            return super()._get_train_description(current_epoch)
        return f"{'Step':<6} (epoch {current_epoch})"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self._steps():
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._steps():
            self._update(self.train_progress_bar_id, trainer.global_step)
        step = trainer.global_step
        if not sys.stdout.isatty() and step % max(trainer.log_every_n_steps, 1) == 0 and step != self._line_step:
            self._line_step = step
            of = f"/{self._steps()}" if self._steps() else ""
            shown = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in self.get_metrics(trainer, pl_module).items()
                if k != "v_num"
            )
            rank_zero_info(f"step {step}{of} (epoch {trainer.current_epoch}){': ' + shown if shown else ''}")
