"""The resume checkpoint: written whole or not at all, and ``--ckpt_path last`` taking the run the user means."""

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on local disks: the checkpoint goes to a temporary file beside its
    target and is renamed over it once whole, so a full disk or a kill mid-write leaves the previous one as it was.

    (Lightning's own write stages the file in the system's temporary folder and copies it over when that is another
    filesystem: a disk that fills during the copy leaves a cut ``last.ckpt``.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if "://" in str(path):  # object storage: its own writes are whole-object
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def resume_last(config) -> None:
    """Point ``--ckpt_path last`` at the newest run's ``last*.ckpt`` and the logger at that run.

    Lightning looks for ``last`` in the checkpoint folder of the logger's *next* version, which a new process has just
    opened empty: it would warn, train from step 0 into a new folder, and exit 0. The run meant is the newest training
    run (the highest ``version_N`` holding ``checkpoints/``, which fit makes as it starts; ``validate`` and ``test``
    runs have none); if it stopped before its first checkpoint, an older run is not resumed in its place.
    """
    logger = config.trainer.logger
    logger = logger[0] if isinstance(logger, list) and logger else logger
    args = getattr(logger, "init_args", None)
    root = None
    if args is not None and args.get("save_dir") is not None:
        root = Path(args.save_dir) / str(args.get("name") or "")
    runs = sorted(
        (
            (int(m.group(1)), p)
            for p in (root.glob("version_*") if root else [])
            if (m := re.fullmatch(r"version_(\d+)", p.name)) and (p / "checkpoints").is_dir()
        ),
        reverse=True,
    )
    fixed = [
        Path(c.init_args.dirpath)
        for c in config.trainer.callbacks or []
        if str(getattr(c, "class_path", "")).endswith("ModelCheckpoint") and c.init_args.get("dirpath")
    ]
    # A ModelCheckpoint with its own folder keeps every run's checkpoints there; else each run keeps its own.
    places = fixed or [folder / "checkpoints" for _, folder in runs[:1]]
    found = sorted((p for place in places for p in place.glob("last*.ckpt")), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(no_checkpoint_message(places, root, runs))
    config.ckpt_path = str(found[-1])
    run = next((n for n, folder in runs if folder in found[-1].parents), runs[0][0] if runs else None)
    if run is not None and args is not None and args.get("version") is None:
        args.version = run
    log.info("resuming %s%s", found[-1], f" in {root}/version_{run}" if run is not None else "")


def no_checkpoint_message(places: list[Path], root: Path | None, runs: list[tuple[int, Path]]) -> str:
    if runs and len(places) == 1 and places[0] == runs[0][1] / "checkpoints":
        older = next((p for _, folder in runs[1:] for p in sorted((folder / "checkpoints").glob("last*.ckpt"))), None)
        hint = f"; to continue an older run pass its file, e.g. --ckpt_path {older}" if older else ""
        return (
            f"--ckpt_path last: the newest run, {runs[0][1]}, has no last.ckpt (it stopped before its first "
            f"checkpoint): nothing of it to resume. Train without --ckpt_path to start again{hint}."
        )
    searched = ", ".join(map(str, places)) or f"{root or 'the logger folder'}/version_*/checkpoints"
    return (
        f"--ckpt_path last: no last.ckpt in {searched}: nothing to resume. Train without --ckpt_path, pass a "
        "checkpoint file, or add a ModelCheckpoint with save_last: true (configs/demo.yaml and the recipe have one)."
    )
