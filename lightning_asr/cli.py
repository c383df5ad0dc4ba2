"""The ``lightning-asr`` command: LightningCLI for fit/validate/test/predict, plus transcribe, export and shard."""

import logging
import signal
import sys
import warnings
from pathlib import Path

from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_asr.callbacks import AdapterCheckpoint, SpeechThroughput, StepProgressBar, ValidationReport
from lightning_asr.checkpoint import AtomicCheckpointIO, resume_last
from lightning_asr.data import SpeechDataModule
from lightning_asr.model.module import WhisperLoRA

log = logging.getLogger(__name__)
# Lightning counts log_every_n_steps in global steps, across epochs: short epochs lose no logs.
warnings.filterwarnings(
    "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval"
)
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
        parser.link_arguments(
            "model", "data.processor", compute_fn=lambda model: model.processor, apply_on="instantiate"
        )

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
        if not any(isinstance(c, ValidationReport) for c in given):
            callbacks = [*callbacks, ValidationReport()]
        trainer = super()._instantiate_trainer(config, callbacks)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default, not a user's own
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def _tool(name: str):
    if name == "shard":
        from lightning_asr.data.shards import shard

        return shard
    if name == "export":
        from lightning_asr.deploy.export import export

        return export
    from lightning_asr.deploy.transcribe import transcribe

    return transcribe


def tool_parser(name: str) -> ArgumentParser:
    """``transcribe``, ``export`` and ``shard`` from their signatures; transcribe's files are positional."""
    function = _tool(name)
    parser = ArgumentParser(prog=f"lightning-asr {name}", description=function.__doc__.split("\n\n")[0])
    if name == "transcribe":
        parser.add_argument(
            "inputs", nargs="+", help="audio files (mp3/wav/flac/ogg), or one .csv/.tsv/.jsonl manifest"
        )
        positional = {"inputs"}
    elif name == "export":
        parser.add_argument("adapter", help="adapter folder written by training")
        parser.add_argument("output", help="folder to write")
        positional = {"adapter", "output"}
    else:
        parser.add_argument("output", help="folder to write the shards into")
        positional = {"output"}
    parser.add_function_arguments(function, as_group=False, skip=positional)
    return parser


def main(args: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if args is None else args
    command = f"lightning-asr {argv[0] if argv else ''}".strip()
    try:
        if argv and argv[0] in ("transcribe", "export", "shard"):
            config = tool_parser(argv[0]).parse_args(argv[1:])
            if _tool(argv[0])(**config.as_dict()):
                sys.exit(1)
            return
        ASRCLI(
            WhisperLoRA,
            SpeechDataModule,
            args=args,
            trainer_defaults={"default_root_dir": "runs"},
            save_config_kwargs={"overwrite": True},
        )
    except SIGTERMException:  # saved by AdapterCheckpoint; a SystemExit without a code would report success
        sys.exit(128 + signal.SIGTERM)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        if not raised_here(err):
            raise
        print(f"{command}: error: {err}", file=sys.stderr)  # it names the field or file, and what to do
        sys.exit(2)


def raised_here(err: BaseException) -> bool:
    """Whether this package raised ``err`` itself (a check of the user's input, whose message says what to do), not a
    library underneath it: those keep their traceback."""
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


PACKAGE = Path(__file__).resolve().parent


if __name__ == "__main__":
    main()
