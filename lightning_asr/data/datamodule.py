"""The DataModule: which rows each stage reads (``sources``), how they are cleaned and counted, and
the loaders (``dataset`` decodes a clip, ``sampling`` orders them).

Three sources sit behind ``source``: a local Common Voice release, a manifest (csv/tsv/jsonl) and a
Hugging Face dataset. All three become the same two-column index (``audio``, ``text``) held in Arrow
memory; no audio is touched until a worker needs the clip.
"""

import functools
import logging
import time
from collections import Counter
from typing import Literal

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader
from transformers import WhisperProcessor

from lightning_asr.batch import Batch, Skipped
from lightning_asr.data import sources
from lightning_asr.data.archive import unpacked
from lightning_asr.data.audio import usable_cache
from lightning_asr.data.dataset import ClipRules, SpeechDataset, collate
from lightning_asr.data.knobs import RetainedSet, Source, check_arguments
from lightning_asr.data.sampling import ShardSampler
from lightning_asr.data.skips import SkipLedger
from lightning_asr.data.sources import DataConfigError, clip_lengths
from lightning_asr.data.transforms import AudioAugment
from lightning_asr.data.windows import Pack, Timestamps
from lightning_asr.model.knobs import as_dict
from lightning_asr.model.whisper import language_code, load_processor, max_target_positions

log = logging.getLogger(__name__)


class SpeechDataModule(L.LightningDataModule):
    """Common Voice (or a manifest, or a Hugging Face dataset) for Whisper fine-tuning.

    Args:
        source: where rows come from: ``common_voice`` (a local release), ``manifest``
            (csv/tsv/jsonl with an audio path and a text column) or ``hf`` (a dataset id).
        path: the release folder (holding ``<locale>/`` or being it), the manifest file (a
            ``{split}`` placeholder picks one per split), or the dataset id.
        locale: Common Voice locale folder, e.g. ``mr``.
        train_split: split(s) to train on; ``+`` joins several (the guide's ``train+dev``).
        val_split: split validated on during ``fit`` and by ``validate``.
        test_split: split used by ``test``.
        model: the Whisper model id or folder whose processor (tokenizer + feature extractor)
            turns rows into tensors. Linked from ``model.model`` by the CLI.
        language: transcript language (name or code, e.g. ``Marathi`` / ``mr``). Linked from the model.
        task: ``transcribe`` or ``translate``. Linked from the model.
        batch_size: clips per training step (per GPU).
        eval_batch_size: clips per validation/test step; generation is cheap per clip, so larger helps.
        num_workers: decoding processes; 0 decodes in the training process.
        max_duration_s: longer clips are skipped; ``None`` is the model's window (30 s for Whisper).
        min_duration_s: shorter labelled clips are skipped: too short to hold a sentence, they are
            cut recordings. ``predict`` transcribes them anyway.
        max_samples: use only the first N rows of each split (smoke runs); ``None`` for all.
        strict: raise on the first bad clip instead of skipping and counting it.
        cache_dir: keep decoded 16 kHz audio here (float16 .npy) so later epochs skip decoding.
        trim_encoder: cut each batch's mel frames to its longest clip, for the trimmed encoder (linked from ``model.speed.trim_encoder``).
        full_window_share: with ``trim_encoder``, the share of training batches (drawn per batch from
            its clips, so a resume draws the same) that keep Whisper's full 30 s window, so the encoder
            also trains at the context it is later used at; 0 trims every batch.
        group_by_length: batch clips of similar length together (durations from Common Voice's
            ``clip_durations.tsv``, else file sizes). With ``trim_encoder`` it removes most padding;
            under DDP every rank's batch of a step has similar lengths, so no rank waits. Clips are
            sorted only within windows of the shuffled order, so training order stays random.
        group_window: training steps per sorted window of ``group_by_length``: longer windows pad
            less, shorter ones keep the order more random.
        audio_column: audio column of a manifest or dataset.
        text_column: text column of a manifest or dataset; ``None`` for unlabelled audio (``predict``).
        hf_config: dataset config name for ``source: hf`` (e.g. the language).
        seed: shuffling seed; the order is a function of seed and epoch, so resume replays it.
        retain: a Common Voice split in another language (:class:`RetainedSet`) scored at every
            validation as ``val_retain/*``: how much of the base's other languages the fine-tune
            costs. Costs a second validation pass over its clips.
        augment: speed perturbation and additive noise on training clips, off by default
            (:class:`~lightning_asr.data.transforms.AudioAugment`); ``model.spec_augment`` masks the features.
        timestamp_share: share of training clips (drawn per clip and epoch, seeded) labelled with
            timestamp tokens, ``<|0.00|> text <|end|>`` with the clip's own length as its end,
            instead of ``<|notimestamps|>``: an adapter trained only on the latter stops predicting
            times (``transcribe --timestamps``, long files). 0 (the guide's labels) by default.
        pack_share: share of training clips (drawn per clip and epoch, seeded) each put first in a
            window with other training clips (``pack_clips``), 0.3-1.0 s apart, up to 30 s, labelled
            with every clip's start and end as timestamp tokens (:func:`~lightning_asr.data.windows.pack`),
            so the adapter keeps writing several timed segments per window; the rest stay single-clip
            windows (labelled as ``timestamp_share`` says). ``group_by_length`` still sorts by each
            item's first clip. 0 by default.
        pack_clips: fewest and most clips a packed window is drawn to hold (uniformly, both included);
            clips that would end past 30 s or take the labels past the decoder's limit are left out,
            so a window of long clips holds fewer. ``[2, 4]`` by default.
        processor: the model's processor, handed over by the CLI (built once); ``None`` builds it
            from ``model``, ``language`` and ``task``.
    """

    def __init__(
        self,
        source: Source = "common_voice",
        path: str = "data/common_voice",
        locale: str = "mr",
        train_split: str = "train+dev",
        val_split: str = "test",
        test_split: str = "test",
        model: str = "openai/whisper-large-v2",
        language: str = "Marathi",
        task: Literal["transcribe", "translate"] = "transcribe",
        batch_size: int = 8,
        eval_batch_size: int = 16,
        num_workers: int = 2,
        max_duration_s: float | None = None,
        min_duration_s: float = 0.1,
        max_samples: int | None = None,
        strict: bool = False,
        cache_dir: str | None = None,
        trim_encoder: bool = False,
        full_window_share: float = 0.0,
        group_by_length: bool = False,
        group_window: int = 64,
        audio_column: str = "audio",
        text_column: str | None = "text",
        hf_config: str | None = None,
        seed: int = 42,
        retain: RetainedSet | None = None,
        augment: AudioAugment = AudioAugment(),  # noqa: B008 (LightningCLI shows a dataclass default's fields)
        timestamp_share: float = 0.0,
        pack_share: float = 0.0,
        pack_clips: tuple[int, int] = (2, 4),
        processor: WhisperProcessor | None = None,
    ) -> None:
        super().__init__()
        check_arguments(locals())
        retain, augment = (as_dict(retain) if retain else None), as_dict(augment)
        self.retain = RetainedSet(**retain) if retain else None
        try:
            self.augment = AudioAugment(**augment)
        except ValueError as err:  # a noise folder is checked at parse time, not an hour into the first epoch
            raise DataConfigError(str(err)) from None
        # Resolved once, and here, not after loading a model.
        self.language = None if language == "auto" else language_code(language, "data.language")  # auto: predict only
        self.retain_language = language_code(self.retain.language, "data.retain.language") if self.retain else None
        self.save_hyperparameters(ignore="processor")
        self.datasets: dict[str, SpeechDataset] = {}
        self.ledger = SkipLedger(strict)
        self._resume: dict | None = None
        self._clip_lengths: dict[str, np.ndarray] = {}
        self._cache_dir: str | None = None  # data.cache_dir once checked writable ("" when it is not)
        self.processor = processor

    # -- rows ------------------------------------------------------------------------------------

    def rows(self, split: str, labelled: bool = True, retained: bool = False) -> pa.Table:
        """The index of one split (of the retained set with ``retained``). Rows that cannot be read
        are dropped and named; so are, for labelled splits, empty transcripts and later copies of a
        clip listed twice."""
        hp = self.hparams
        source, path, locale = self._where(retained)
        table, skipped = sources.index(source, path, locale, split, hp.audio_column, hp.text_column, hp.hf_config)
        self._note(skipped)
        max_samples = self.retain.max_samples if retained else hp.max_samples
        if max_samples is not None:
            table = table.slice(0, max_samples)
        if not labelled:  # predictions keep every input, repeats included: their outputs line up with the inputs
            return table
        table, dropped = sources.clean(table)
        self._note(dropped)
        return table

    # -- Lightning hooks ---------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if self.processor is None:
            self.processor = load_processor(hp.model, self.language, hp.task)
        splits = {
            "fit": {"train": hp.train_split, "val": hp.val_split},
            "validate": {"val": hp.val_split},
            "test": {"test": hp.test_split},
            "predict": {"predict": hp.test_split},
        }[stage]
        if self.retain is not None and stage in ("fit", "validate"):
            splits["retain"] = self.retain.split
        max_tokens = max_target_positions(hp.model)
        if self._cache_dir is None:
            self._cache_dir = usable_cache(hp.cache_dir) or ""
        for name, split in splits.items():
            if name not in self.datasets:
                self.datasets[name] = self._dataset(name, split, max_tokens)
                self._check_not_empty(name, split)
        log.info("data: %s", ", ".join(f"{k} {len(v)} rows" for k, v in self.datasets.items()))

    def _dataset(self, name: str, split: str, max_tokens: int) -> SpeechDataset:
        """The dataset of stage part ``name`` (``train``, ``val``, ``retain``, ``test``, ``predict``): only training
        clips are augmented, timestamped or packed."""
        hp, train = self.hparams, name == "train"
        rules = ClipRules(
            max_duration_s=hp.max_duration_s or self.processor.feature_extractor.chunk_length,
            min_duration_s=hp.min_duration_s,
            max_label_tokens=max_tokens,
            with_labels=name != "predict",
        )
        windows = [Pack(hp.pack_share, tuple(hp.pack_clips)), Timestamps(hp.timestamp_share)]
        return SpeechDataset(
            self.rows(split, labelled=rules.with_labels, retained=name == "retain"),
            self.processor,
            rules,
            language=self.retain_language if name == "retain" else self.language,
            cache_dir=self._cache_dir or None,
            strict=hp.strict,
            seed=hp.seed,
            clip_transforms=[self.augment] if train and self.augment.enabled else [],
            window_transforms=[t for t in windows if t.share] if train else [],
        )

    def _where(self, retained: bool) -> tuple[str, str, str]:
        """The source, path and locale of the target data (or the retained set); a release archive as the folder it
        unpacks to."""
        hp = self.hparams
        source, path, locale = (
            ("common_voice", self.retain.path, self.retain.locale) if retained else (hp.source, hp.path, hp.locale)
        )
        return source, unpacked(path) if source == "common_voice" else path, locale

    def prepare_data(self) -> None:
        # Once per node, before any rank reads: a downloaded release archive is unpacked here.
        self._where(retained=False)
        if self.retain is not None:
            self._where(retained=True)

    def _check_not_empty(self, name: str, split: str) -> None:
        if len(self.datasets[name]):
            return
        what = f"data: the {name} split {split!r} ({self.hparams.path}) has no usable rows"
        if name in ("train", "predict"):
            raise DataConfigError(f"{what}; {self.summary()}")
        log.warning("%s: nothing to score, so no %s/wer and no best/ adapter", what, name)

    def _loader(self, name: str, batch_size: int, train: bool) -> DataLoader:
        dataset = self.datasets[name]
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        # Predictions keep the input order: transcripts are read in the order the files were given.
        lengths = self._lengths(name) if self.hparams.group_by_length and name != "predict" else None
        sampler = ShardSampler(
            dataset,
            world,
            rank,
            shuffle=train,
            seed=self.hparams.seed,
            pad=train,
            lengths=lengths,
            batch_size=batch_size,
            window=self.hparams.group_window,
            with_epoch=train and dataset.draws,
        )
        if train and self._resume and self._resume["epoch"] == (self.trainer.current_epoch if self.trainer else 0):
            # Rank r's shard is order[r::W], so the first m clips of every shard are order[:m * W]:
            # a global count resumes correctly under any world size (to within one batch).
            sampler.set_epoch(self._resume["epoch"])
            sampler.start = self._resume["samples"] // world
            # The grouped order of the interrupted epoch was cut for its world size and batch.
            sampler.order_for = (
                self._resume["epoch"],
                self._resume.get("world", world),
                self._resume.get("batch_size", self.hparams.batch_size),
            )
            self._resume = None
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=functools.partial(self.collate, train=train),
            pin_memory=torch.cuda.is_available(),
            # Iterators draw their worker seed from this, not from the global RNG, so starting a
            # loader mid-run (resume) leaves the training RNG (dropout) exactly where it was.
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def _lengths(self, name: str) -> np.ndarray:
        if name not in self._clip_lengths:
            folder = sources.release_folder(*self._where(retained=name == "retain"))
            tsv = folder / "clip_durations.tsv" if folder else None
            start = time.perf_counter()
            self._clip_lengths[name] = clip_lengths(self.datasets[name].rows, tsv)
            log.info(
                "group_by_length: %s lengths of %d clips in %.1f s",
                name,
                len(self.datasets[name]),
                time.perf_counter() - start,
            )
        return self._clip_lengths[name]

    def collate(self, items: list, train: bool = False) -> Batch:
        return collate(
            items,
            self.processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
            self.hparams.trim_encoder,
            self.hparams.full_window_share if train else 0.0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, train=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        val = self._loader("val", self.hparams.eval_batch_size, train=False)
        if "retain" not in self.datasets:
            return val
        return [val, self._loader("retain", self.hparams.eval_batch_size, train=False)]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.hparams.eval_batch_size, train=False)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        self._note(batch.pop("skipped", []))
        return batch

    def _note(self, skipped: list[Skipped]) -> None:
        if not self.ledger.note(skipped):
            return
        trainer = self.trainer
        if trainer is not None and trainer.logger is not None and trainer.is_global_zero:
            counts = {f"data/skipped_{k}": float(v) for k, v in self.skipped.items()}
            trainer.logger.log_metrics(counts, step=trainer.global_step)

    @property
    def skipped(self) -> Counter[str]:
        """Distinct skipped clips by reason."""
        return self.ledger.counts()

    def skipped_clips(self) -> dict[str, Skipped]:
        """Every skipped clip (or index row) by its name."""
        return self.ledger.clips()

    def summary(self) -> str:
        return self.ledger.summary()

    def teardown(self, stage: str) -> None:
        if self.trainer is None or self.trainer.is_global_zero:
            log.info(self.summary())

    def state_dict(self) -> dict:
        """The training position, so a resumed run continues with the next unseen batch."""
        if self.trainer is None:
            return {}
        epochs = self.trainer.fit_loop.epoch_progress.current
        # Saved after an epoch's end (SIGTERM there, or the end of training) the batch count is still the
        # finished epoch's while current_epoch is already the next: that epoch starts at its first clip.
        batches = (
            self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
            if epochs.started > epochs.completed
            else 0
        )
        samples = batches * self.hparams.batch_size * self.trainer.world_size
        return {
            "epoch": self.trainer.current_epoch,
            "samples": samples,
            "world": self.trainer.world_size,
            "batch_size": self.hparams.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self._resume = state or None
