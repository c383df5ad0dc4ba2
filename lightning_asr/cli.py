"""The ``lightning-asr`` command: LightningCLI for fit/validate/test/predict, plus transcribe and export."""

import logging
import sys

from lightning.pytorch.cli import LightningCLI

from lightning_asr.callbacks import AdapterCheckpoint, SpeechThroughput
from lightning_asr.data import SpeechDataModule
from lightning_asr.module import WhisperLoRA


class ASRCLI(LightningCLI):
    """LightningCLI with the adapter checkpoint and throughput monitor always on, and the model's
    name, language and task passed to the data module so they are set in one place."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(AdapterCheckpoint, "adapter_checkpoint")
        parser.add_lightning_class_args(SpeechThroughput, "throughput")
        for field in ("model", "language", "task"):
            parser.link_arguments(f"model.{field}", f"data.{field}")
        parser.link_arguments("model.trim_encoder", "data.trim_frames")


def main(args: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in ("transcribe", "export"):
        from jsonargparse import CLI

        from lightning_asr import tools

        CLI(getattr(tools, argv[0]), args=argv[1:])
        return
    ASRCLI(
        WhisperLoRA,
        SpeechDataModule,
        args=args,
        trainer_defaults={"default_root_dir": "runs"},
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
