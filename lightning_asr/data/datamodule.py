"""The DataModule: which rows each stage reads (``sources``; several weighted corpora, ``mixture``), how they are
cleaned and counted, and the loaders (``dataset`` decodes a clip, ``sampling`` orders them). Every corpus becomes the
same two-column index (``audio``, ``text``) in Arrow memory; no audio is touched until a worker needs the clip."""

import functools
import logging
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
from lightning_asr.data.mixture import DataSource, MixedDataset, check_sources
from lightning_asr.data.nonspeech import NonSpeechSet, NoSpeech
from lightning_asr.data.sampling import ShardSampler, dataset_lengths, position
from lightning_asr.data.skips import SkipLedger
from lightning_asr.data.sources import DataConfigError
from lightning_asr.data.spontaneous import LongClips, prepare_windows, spontaneous_index
from lightning_asr.data.transforms import AudioAugment
from lightning_asr.data.windows import Pack, Timestamps
from lightning_asr.model.knobs import as_dict
from lightning_asr.model.metrics import NO_SPEECH
from lightning_asr.model.whisper import language_code, load_processor, max_target_positions

log = logging.getLogger(__name__)
PREFIXES = {"retain": "val_retain", "nospeech": NO_SPEECH}  # validation sets besides the target's, and their scores


class SpeechDataModule(L.LightningDataModule):
    """Common Voice (or a manifest, or a Hugging Face dataset) for Whisper fine-tuning.

    Args:
        source: where rows come from: ``common_voice`` (a local release), ``spontaneous`` (a Common Voice
            Spontaneous Speech release), ``manifest`` (csv/tsv/jsonl with an audio path and a text column) or ``hf``
            (a dataset id).
        path: the release folder (holding ``<locale>/`` or being it) or its downloaded ``.tar.gz``, the manifest file
            (a ``{split}`` placeholder picks one per split), or the dataset id.
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
        long_clips: a Spontaneous Speech recording longer than the window: ``window`` cuts it into windows of whole
            segments labelled with the words said in each (found once by the base model, kept beside the TSV), ``skip``
            skips and counts it.
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
        no_speech: training on generated silence, noise and music (and on clips with empty transcripts) toward no
            words, and the share of such clips the model writes words on (:class:`~lightning_asr.data.nonspeech.NoSpeech`);
            off by default.
        sources: several corpora trained on together (:class:`~lightning_asr.data.mixture.DataSource`), each
            with a weight: batches draw from them in proportion, an epoch is as many draws as they have training
            rows, and validation scores each as ``val/<name>/*`` (those in ``language`` also pooled into ``val/*``).
            ``test`` and ``predict`` read the first. ``None``: the one corpus of ``source``, ``path`` and ``locale``.
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
        long_clips: LongClips = "window",
        seed: int = 42,
        retain: RetainedSet | None = None,
        augment: AudioAugment = AudioAugment(),  # noqa: B008 (LightningCLI shows a dataclass default's fields)
        timestamp_share: float = 0.0,
        pack_share: float = 0.0,
        pack_clips: tuple[int, int] = (2, 4),
        no_speech: NoSpeech = NoSpeech(),  # noqa: B008 (frozen)
        sources: list[DataSource] | None = None,
        processor: WhisperProcessor | None = None,
    ) -> None:
        super().__init__()
        check_arguments(locals())
        retain, augment = (as_dict(retain) if retain else None), as_dict(augment)
        self.retain = RetainedSet(**retain) if retain else None
        r = self.retain  # read as one more corpus, never trained on
        self.retained = DataSource("retain", r.path, "common_voice", r.locale, 0.0, r.language) if r else None
        # Without data.sources, the one corpus of data.source, data.path and data.locale.
        columns = dict(audio_column=audio_column, text_column=text_column, hf_config=hf_config)
        one = DataSource("data", path, source, locale, **columns)
        self.corpora = check_sources([DataSource(**as_dict(s)) for s in sources or []]) or [one]
        try:
            self.augment = AudioAugment(**augment)
            self.no_speech = NoSpeech(**as_dict(no_speech))
        except ValueError as err:  # a noise folder is checked at parse time, not an hour into the first epoch
            raise DataConfigError(str(err)) from None
        # Resolved once, and here, not after loading a model.
        self.language = None if language == "auto" else language_code(language, "data.language")  # auto: predict only
        self.languages = {  # each corpus's, the retained set's too
            c.name: language_code(c.language, f"data.sources ({c.name}).language") if c.language else self.language
            for c in self.corpora
        } | ({"retain": language_code(self.retain.language, "data.retain.language")} if self.retain else {})
        self.save_hyperparameters(ignore="processor")
        self.datasets: dict[str, SpeechDataset] = {}
        self.ledger = SkipLedger(strict)
        self._resume: dict | None = None
        self._clip_lengths: dict[str, np.ndarray] = {}
        self._parts: dict[str, list[DataSource]] = {}  # each dataset's corpora, in the order laid end to end
        self._cache_dir: str | None = None  # data.cache_dir once checked writable ("" when it is not)
        self.processor = processor

    # -- rows ------------------------------------------------------------------------------------

    def rows(
        self, split: str, labelled: bool = True, corpus: DataSource | None = None, train: bool = False
    ) -> pa.Table:
        """One split of ``corpus`` (by default the first), without the rows that cannot be read nor, when labelled,
        empty transcripts (unless trained on) and repeats: each named."""
        hp = self.hparams
        corpus = corpus or self.corpora[0]
        source, path, locale = self._where(corpus)
        if source == "spontaneous":
            table, skipped = spontaneous_index(path, locale, split, hp.max_duration_s or 30.0, hp.long_clips, hp.model)
        else:
            columns = corpus.audio_column, hp.text_column and corpus.text_column
            table, skipped = sources.index(source, path, locale, split, *columns, corpus.hf_config)
        self._note(skipped)
        max_samples = self.retain.max_samples if corpus is self.retained else hp.max_samples
        if max_samples is not None:
            table = table.slice(0, max_samples)
        if not labelled:  # predictions keep every input, repeats included: their outputs line up with the inputs
            return table
        table, dropped = sources.clean(table, keep_empty=train and self.no_speech.train_empty)
        self._note(dropped)
        return table

    @property
    def scored(self) -> tuple[list[str], list[str]]:
        """Each validation dataloader's metric prefix, in order, and those pooled into ``val/*`` (sources in the
        target language); read by the module's scoreboard."""
        names = self._val_names()
        parts = [k for k in names if k not in PREFIXES] or ["val"]
        pooled = [k for k in parts if k.startswith("val/") and self.languages[k[4:]] == self.language]
        if parts != ["val"] and not pooled:  # no source in the target language: val/* pools them all
            pooled = list(parts)
        return parts + [PREFIXES[k] for k in names if k in PREFIXES], pooled

    def _val_names(self) -> list[str]:
        """The datasets validation reads, in dataloader order: the target's (one per source), then the others."""
        names = [k for k in self.datasets if k == "val" or k.startswith("val/")]
        return names + [k for k in PREFIXES if k in self.datasets]

    # -- Lightning hooks ---------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if self.processor is None:
            self.processor = load_processor(hp.model, self.language, hp.task)
        several, first = len(self.corpora) > 1, self.corpora[0]
        parts: dict[str, tuple[str, list[DataSource]]] = {
            "fit": {"train": (hp.train_split, self.corpora)},
            "test": {"test": (hp.test_split, [first])},
            "predict": {"predict": (hp.test_split, [first])},
        }.get(stage, {})
        if stage in ("fit", "validate"):
            for c in self.corpora:
                split = hp.val_split if c.val_split is None else c.val_split
                if split:
                    parts[f"val/{c.name}" if several else "val"] = (split, [c])
            if self.retain is not None:
                parts["retain"] = (self.retain.split, [self.retained])
            if clips := self.no_speech.eval_clips:
                self.datasets["nospeech"] = NonSpeechSet(clips, self.processor, self.language, hp.seed)
        max_tokens = max_target_positions(hp.model)
        if self._cache_dir is None:
            self._cache_dir = usable_cache(hp.cache_dir) or ""
        for name, (split, corpora) in parts.items():
            if name not in self.datasets:
                self.datasets[name] = self._dataset(name, split, corpora, max_tokens)
                self._check_not_empty(name, split)
        log.info("data: %s", ", ".join(f"{k} {len(v)} rows" for k, v in self.datasets.items()))

    def _dataset(
        self, name: str, split: str, corpora: list[DataSource], max_tokens: int
    ) -> SpeechDataset | MixedDataset:
        """The dataset of stage part ``name`` (``train``, ``val``, ``val/<source>``, ``retain``, ``test``,
        ``predict``): only training clips are augmented, timestamped or packed. Training on several sources lays
        their datasets end to end (the sampler draws from them by weight)."""
        hp, train = self.hparams, name == "train"
        rules = ClipRules(
            max_duration_s=hp.max_duration_s or self.processor.feature_extractor.chunk_length,
            min_duration_s=hp.min_duration_s,
            max_label_tokens=max_tokens,
            with_labels=name != "predict",
        )
        windows = [Pack(hp.pack_share, tuple(hp.pack_clips)), Timestamps(hp.timestamp_share), self.no_speech]
        parts = []
        for c in corpora:
            if train and not c.weight and len(corpora) > 1:
                continue  # validated only
            split_of = c.train_split if train and c.train_split else split
            parts.append(
                SpeechDataset(
                    self.rows(split_of, labelled=rules.with_labels, corpus=c, train=train),
                    self.processor,
                    rules,
                    language=self.languages[c.name],
                    cache_dir=self._cache_dir or None,
                    strict=hp.strict,
                    seed=hp.seed,
                    clip_transforms=[self.augment] if train and self.augment.enabled else [],
                    window_transforms=[t for t in windows if t.share] if train else [],
                )
            )
            self._parts.setdefault(name, []).append(c)
        return parts[0] if len(corpora) == 1 else MixedDataset(parts, [c.weight for c in self._parts[name]])

    def _where(self, corpus: DataSource) -> tuple[str, str, str]:
        """A corpus's source, path and locale; a release archive as the folder it unpacks to."""
        path = unpacked(corpus.path) if corpus.source in ("common_voice", "spontaneous") else corpus.path
        return corpus.source, path, corpus.locale

    def prepare_data(self) -> None:
        # Once per node, before any rank reads: a downloaded archive is unpacked, long recordings are windowed.
        hp = self.hparams
        for corpus in self.corpora + ([self.retained] if self.retain is not None else []):
            source, path, locale = self._where(corpus)
            if source == "spontaneous" and hp.long_clips == "window":
                language = self.languages[corpus.name]
                for split in {corpus.train_split or hp.train_split, corpus.val_split or hp.val_split, hp.test_split}:
                    prepare_windows(path, locale, split, hp.max_duration_s or 30.0, hp.model, language)

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
        sampler = ShardSampler(
            dataset,
            world,
            rank,
            shuffle=train,
            seed=self.hparams.seed,
            pad=train,
            lengths=self._lengths(name) if self.hparams.group_by_length and name != "predict" else None,
            batch_size=batch_size,
            window=self.hparams.group_window,
            with_epoch=train and dataset.draws,
            mixture=dataset.mixture() if train and isinstance(dataset, MixedDataset) else None,
        )
        if train and self._resume and self._resume["epoch"] == (self.trainer.current_epoch if self.trainer else 0):
            sampler.resume(self._resume, self.hparams.batch_size)
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

    def _lengths(self, name: str) -> np.ndarray | None:
        """Each row's length for ``group_by_length``; None for generated sets (``no_speech``: no corpus to read)."""
        if name not in self._parts:
            return None
        if name not in self._clip_lengths:
            folders = [sources.release_folder(*self._where(c)) for c in self._parts[name]]
            self._clip_lengths[name] = dataset_lengths(self.datasets[name], folders, name)
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
        loaders = [self._loader(k, self.hparams.eval_batch_size, train=False) for k in self._val_names()]
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.hparams.eval_batch_size, train=False)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        self._note(batch.pop("skipped", []))
        return batch

    def _note(self, skipped: list[Skipped]) -> None:
        self.ledger.note(skipped, self.trainer)

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
        """The training position, so a resumed run continues with the next unseen batch (every source's too: a
        mixture's order is a function of seed and epoch)."""
        return position(self.trainer, self.hparams.batch_size) if self.trainer is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state or None
