"""The ``lightning-asr`` command: LightningCLI for fit/validate/test/predict, plus transcribe and export."""

import logging
import re
import signal
import sys
import warnings
from pathlib import Path

from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_asr.callbacks import AdapterCheckpoint, SpeechThroughput, StepProgressBar
from lightning_asr.data import SpeechDataModule
from lightning_asr.module import WhisperLoRA

log = logging.getLogger(__name__)
# Lightning counts log_every_n_steps in global steps, across epochs: short epochs lose no logs.
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval")
# Lightning's own use of a torch API that torch has since renamed: nothing a user can act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class ASRCLI(LightningCLI):
    """LightningCLI with the adapter checkpoint, throughput monitor and step progress bar always on,
    the model's name, language, task and processor passed to the data module so they are set (and
    built) in one place,
    and ``fit --ckpt_path last`` resuming the interrupted run in its own run folder."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(AdapterCheckpoint, "adapter_checkpoint")
        parser.add_lightning_class_args(SpeechThroughput, "throughput")
        for field in ("model", "language", "task"):
            parser.link_arguments(f"model.{field}", f"data.{field}")
        parser.link_arguments("model.speed.trim_encoder", "data.trim_encoder")
        parser.link_arguments("model", "data.processor", compute_fn=lambda model: model.processor, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit" and self.config.fit.ckpt_path == "last":
            resume_last(self.config.fit)

    def before_fit(self) -> None:
        # Before the base loads (minutes for large-v2), not after: a run that may not write its adapters.
        for callback in self.trainer.callbacks:
            if isinstance(callback, AdapterCheckpoint):
                callback.check_not_taken(self.trainer, resuming=self.config.fit.ckpt_path is not None)

    def _instantiate_trainer(self, config: dict, callbacks: list) -> object:
        given = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, StepProgressBar()]
        return super()._instantiate_trainer(config, callbacks)


def resume_last(config) -> None:
    """Point ``--ckpt_path last`` at the newest ``last*.ckpt`` and the logger at the run that wrote it.

    Lightning looks for ``last`` in the checkpoint folder of the logger's *next* version, which a
    new process has just opened empty: it would warn, train from step 0 into a new folder, and exit 0.
    """
    logger = config.trainer.logger
    logger = logger[0] if isinstance(logger, list) and logger else logger
    args = getattr(logger, "init_args", None)
    root = None
    if args is not None and args.get("save_dir") is not None:
        root = Path(args.save_dir) / str(args.get("name") or "")
    runs = sorted(((int(m.group(1)), p) for p in (root.glob("version_*") if root else [])
                   if (m := re.fullmatch(r"version_(\d+)", p.name))), reverse=True)
    places = [run / "checkpoints" for _, run in runs]
    for callback in config.trainer.callbacks or []:
        if str(getattr(callback, "class_path", "")).endswith("ModelCheckpoint") and callback.init_args.get("dirpath"):
            places.insert(0, Path(callback.init_args.dirpath))
    found = sorted((p for place in places for p in place.glob("last*.ckpt")), key=lambda p: p.stat().st_mtime)
    if not found:
        searched = ", ".join(map(str, places[:4])) or f"{root or 'the logger folder'}/version_*/checkpoints"
        raise SystemExit(
            f"--ckpt_path last: no last.ckpt in {searched}: nothing to resume. Train without --ckpt_path, pass a "
            "checkpoint file, or add a ModelCheckpoint with save_last: true (configs/demo.yaml and the recipe have one)."
        )
    config.ckpt_path = str(found[-1])
    run = next((n for n, folder in runs if folder in found[-1].parents), runs[0][0] if runs else None)
    if run is not None and args is not None and args.get("version") is None:
        args.version = run
    log.info("resuming %s%s", found[-1], f" in {root}/version_{run}" if run is not None else "")


def _tool(name: str):
    if name == "export":
        from lightning_asr.export import export

        return export
    from lightning_asr.tools import transcribe

    return transcribe


def tool_parser(name: str) -> ArgumentParser:
    """``transcribe`` and ``export`` from their signatures; transcribe's files are positional."""
    function = _tool(name)
    parser = ArgumentParser(prog=f"lightning-asr {name}", description=function.__doc__.split("\n\n")[0])
    if name == "transcribe":
        parser.add_argument("inputs", nargs="+", help="audio files (mp3/wav/flac/ogg), or one .csv/.tsv/.jsonl manifest")
        positional = {"inputs"}
    else:
        parser.add_argument("adapter", help="adapter folder written by training")
        parser.add_argument("output", help="folder to write")
        positional = {"adapter", "output"}
    parser.add_function_arguments(function, as_group=False, skip=positional)
    return parser


def main(args: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in ("transcribe", "export"):
        config = tool_parser(argv[0]).parse_args(argv[1:])
        try:
            failed = _tool(argv[0])(**config.as_dict())
        except (FileExistsError, FileNotFoundError, ValueError) as err:  # named, with what to do: no traceback
            print(f"lightning-asr {argv[0]}: error: {err}", file=sys.stderr)
            sys.exit(2)
        if failed:
            sys.exit(1)
        return
    try:
        ASRCLI(
            WhisperLoRA,
            SpeechDataModule,
            args=args,
            trainer_defaults={"default_root_dir": "runs"},
            save_config_kwargs={"overwrite": True},
        )
    except SIGTERMException:  # saved by AdapterCheckpoint; a SystemExit without a code would report success
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
