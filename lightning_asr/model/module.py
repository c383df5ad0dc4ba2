"""The model path: a k-bit Whisper base with LoRA adapters, trained on loss, validated on WER."""

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import torch
from peft import PeftModel
from torch.nn.attention import SDPBackend, sdpa_kernel

from lightning_asr.batch import Batch
from lightning_asr.model import fp8
from lightning_asr.model.build import build_model
from lightning_asr.model.decode import detect_languages, graphed, greedy, prompt_ids
from lightning_asr.model.knobs import Decoding, Speed, as_dict, check_knobs
from lightning_asr.model.lora import LoRA, merged, trainable_state
from lightning_asr.model.loss import token_loss
from lightning_asr.model.metrics import Scoreboard
from lightning_asr.model.optim import Optimizer, adamw, check_warmup, linear_schedule, optimizer_class
from lightning_asr.model.rng import rng_states, set_rng_states
from lightning_asr.model.spec_augment import SpecAugment, audio_mask
from lightning_asr.model.whisper import LANGUAGES, Quantization, language_code, load_processor, train_flops
from lightning_asr.text import clean_transcript, is_degenerate

log = logging.getLogger(__name__)

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class NonFiniteLossError(RuntimeError):
    """Too many steps in a row produced a NaN or infinite loss."""


class WhisperLoRA(L.LightningModule):
    """Whisper with LoRA adapters over a frozen (optionally k-bit) base.

    Args:
        model: hub id (``openai/whisper-large-v2``) or local folder of the base model.
        language: transcript language, name or code (``Marathi`` / ``mr``); ``auto`` (``predict``
            only) detects each clip's language, as Whisper does, and decodes it in that language.
        task: ``transcribe``, or ``translate`` (to English).
        quantization: how the frozen base is stored: ``int8`` (the guide's LLM.int8), ``nf4``
            (4-bit, double-quantized, bf16 compute: less memory, faster than int8 on GPU) or
            ``none`` (``dtype`` weights: fastest, most memory).
        dtype: dtype of the non-quantized weights; ``auto`` is bfloat16 on GPU, float32 on CPU.
        from_config: build a seeded random base from ``model``'s ``config.json`` instead of loading
            weights (the offline demo and speed benchmarks).
        init_seed: seed of that random base.
        lora: the adapter's rank, scale, dropout, target layers (:class:`~lightning_asr.model.lora.LoRA`).
        spec_augment: time and frequency masks on training features, off by default
            (:class:`~lightning_asr.model.spec_augment.SpecAugment`).
        decoding: how validation, test and predict decode (:class:`~lightning_asr.model.knobs.Decoding`).
        speed: checkpointing, the trimmed encoder, compiled layers, attention kernels, the encoder's
            saved activations offloaded (:class:`~lightning_asr.model.knobs.Speed`).
        adapter: folder of a saved adapter to start from (``validate``/``test`` an adapter, or
            continue from one); ``None`` starts fresh.
        learning_rate: peak AdamW learning rate (of the A matrices, where ``lora.loraplus_ratio`` speeds up B).
        warmup_steps: optimizer steps of linear warm-up, then linear decay to 0 at the run's end; ``null``
            where ``warmup_share`` is set.
        warmup_share: the warm-up as a share of the run's optimizer steps instead (0.1: a tenth), so
            that it follows the run's length in epochs and batch size; ``null`` uses ``warmup_steps``.
        weight_decay: AdamW weight decay on adapter weights.
        optimizer: ``adamw`` (torch's, the guide's), ``adamw8bit`` (bitsandbytes' 8-bit states: less memory for a
            large rank or ``lora.modules_to_save``) or ``paged_adamw8bit`` (its states paged to host memory under
            pressure).
        validate_before_training: run a full validation before the first step, so the zero-shot WER
            is logged at step 0 next to every later value. Turn off for quick runs.
        max_bad_steps: stop with an error after this many non-finite losses in a row (each is skipped).
        log_examples: reference/prediction pairs per validation that ``ValidationReport`` writes to TensorBoard.
    """

    def __init__(
        self,
        model: str = "openai/whisper-large-v2",
        language: str = "Marathi",
        task: Literal["transcribe", "translate"] = "transcribe",
        quantization: Quantization = "int8",
        dtype: Dtype = "auto",
        from_config: bool = False,
        init_seed: int = 0,
        lora: LoRA = LoRA(),  # noqa: B008 (LightningCLI shows a dataclass default's fields)
        spec_augment: SpecAugment = SpecAugment(),  # noqa: B008
        decoding: Decoding = Decoding(),  # noqa: B008
        speed: Speed = Speed(),  # noqa: B008
        adapter: str | None = None,
        learning_rate: float = 1e-3,
        warmup_steps: int | None = 50,
        warmup_share: float | None = None,
        weight_decay: float = 0.0,
        optimizer: Optimizer = "adamw",
        validate_before_training: bool = True,
        max_bad_steps: int = 10,
        log_examples: int = 8,
    ) -> None:
        super().__init__()
        # Once, and at parse time, not after loading a 3 GB model; None: detect each clip's (auto).
        self.language = None if language == "auto" else language_code(language, "model.language")
        check_warmup(warmup_steps, warmup_share)
        optimizer_class(optimizer)  # a misspelt name fails here, not when fit starts
        lora, spec_augment, decoding, speed = map(as_dict, (lora, spec_augment, decoding, speed))
        self.lora, self.spec_augment = LoRA(**lora), SpecAugment(**spec_augment)
        self.decoding, self.speed = Decoding(**decoding), Speed(**speed)
        check_knobs(quantization, self.lora, self.decoding, self.speed)
        self.save_hyperparameters()
        self.strict_loading = False  # checkpoints carry only the adapter, not the frozen base
        self.model: PeftModel | None = None
        # Tokenizer and feature extractor, built here (seconds, not the base's minutes) so that the
        # CLI hands this same object to the DataModule (``link_arguments(..., apply_on="instantiate")``).
        self.processor = load_processor(model, self.language, task)
        self.bad_steps = 0
        self.flops_per_batch: int | None = None
        # The target's scores, a retained set's in another language (``data.retain``: what the fine-tune costs the
        # base elsewhere, ``val_retain/``) and each source's (``data.sources``); the DataModule names them in setup.
        self.scores = Scoreboard()
        # Every (clip, reference, prediction) of the last ``test`` run, in order: per-clip errors for
        # paired comparisons (benchmarks/quality.py) and the clips an export's parity check decodes
        # again (export.py), from the same decode that gave test/wer.
        self.test_transcripts: list[tuple[str, str, str]] = []

    # -- model ------------------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        device = self.trainer.strategy.root_device if self._trainer is not None else torch.device("cpu")
        self.model = build_model(
            hp.model,
            hp.quantization,
            device,
            lora=self.lora,
            speed=self.speed,
            spec_augment=self.spec_augment,
            adapter=hp.adapter,
            dtype=None if hp.dtype == "auto" else getattr(torch, hp.dtype),
            from_config=hp.from_config,
            init_seed=hp.init_seed,
        )

    # -- training ---------------------------------------------------------------------------------

    def attention(self) -> contextlib.AbstractContextManager:
        """The attention kernels forward and backward may use (compiled layers bake in their first choice)."""
        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        return sdpa_kernel(backends + [SDPBackend.CUDNN_ATTENTION] * self.speed.cudnn_attention)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        n = len(batch["paths"])
        if self.every_rank_skips(n == 0):  # every clip of this (or another rank's) batch was skipped
            return self.skipped_step()
        self.flops_per_batch = train_flops(
            self.model.config, batch["input_features"].shape, batch["labels"].shape[1], self.lora.encoder
        )
        with self.attention():
            # The attention mask only places SpecAugment's time masks on the audio (the encoder ignores it).
            mask = (
                audio_mask(batch["durations"], batch["input_features"].shape[-1]) if self.spec_augment.enabled else None
            )
            inputs = (
                dict(input_features=batch["input_features"], attention_mask=mask)
                if self.lora.encoder
                else dict(encoder_outputs=(self.frozen_encoder(batch["input_features"], mask),))
            )
            loss = token_loss(self.model.get_base_model(), batch["labels"], self.speed.gradient_checkpointing, **inputs)
        if self.every_rank_skips(not torch.isfinite(loss)):
            self.bad_steps += 1
            self.log("train/skipped_nonfinite", float(self.bad_steps))
            if self.bad_steps >= self.hparams.max_bad_steps:
                raise NonFiniteLossError(
                    f"{self.bad_steps} non-finite losses in a row at step {self.global_step}: lower "
                    "model.learning_rate, use bf16-mixed instead of 16-mixed, or check the data"
                )
            log.warning("non-finite loss at step %d: step skipped", self.global_step)
            return self.skipped_step()
        self.bad_steps = 0
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        if torch.cuda.is_available() and self.device.type == "cuda":
            self.log("train/peak_memory_gib", torch.cuda.max_memory_allocated(self.device) / 2**30, batch_size=n)
        return loss

    def every_rank_skips(self, skip: bool) -> bool:
        """Whether this step is skipped, decided alike on every rank: under DDP a rank that skipped alone
        while the others ran backward would leave their gradient all-reduce waiting for it forever."""
        return self.trainer.strategy.reduce_boolean_decision(skip, all=False)

    def skipped_step(self) -> torch.Tensor | None:
        """What a skipped step returns: None, which skips backward and the optimizer step. Lightning refuses
        None under DDP, so there every rank returns a zero loss that reaches each trainable parameter: the
        all-reduce completes and the optimizer steps on zero gradients (AdamW's momentum still moves the
        weights a little; a step cannot be skipped on every rank from here)."""
        if self.trainer.world_size == 1:
            return None
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    @torch.no_grad()
    def frozen_encoder(self, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The encoder's output without autograd (``lora.encoder: false``: nothing in it trains), after
        the SpecAugment masks the model's own forward would have drawn."""
        whisper = self.model.get_base_model().model
        features = whisper._mask_input_features(features, attention_mask=mask)
        return whisper.encoder(features).last_hidden_state

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        with self.attention():  # gradient checkpointing runs the forward again in here
            super().backward(loss, *args, **kwargs)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        optimizer = adamw(self.model, hp.learning_rate, hp.weight_decay, self.lora.loraplus_ratio, hp.optimizer)
        scheduler = linear_schedule(
            optimizer, self.trainer.estimated_stepping_batches, hp.warmup_steps, hp.warmup_share
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_before_backward(self, loss: torch.Tensor) -> None:
        if self.speed.compile and self.speed.gradient_checkpointing:
            # Checkpointed layers recompute on the autograd engine's device thread, which takes its intra-op
            # thread count when it starts (at the first backward) from the process's last torch.set_num_threads,
            # which on a GPU is likely the DataLoader's pin-memory thread's 1. Compiled graphs guard on it: every
            # layer would compile twice and reach dynamo's recompile limit (8) sooner, then run eagerly.
            # Restating this thread's count first gives both threads the same.
            torch.set_num_threads(torch.get_num_threads())

    def on_train_start(self) -> None:
        trainer = self.trainer
        if self.hparams.validate_before_training and self.global_step == 0 and trainer.enable_validation:
            # Same mechanics as Lightning's own mid-epoch validation (training_epoch_loop.on_advance_end).
            trainer.validating = True
            trainer.fit_loop.epoch_loop.val_loop.run()
            trainer.training = True

    # -- evaluation -------------------------------------------------------------------------------

    @torch.no_grad()
    def transcribe(self, input_features: torch.Tensor, language: str | None = None) -> tuple[list[str], list[bool]]:
        """Greedy decoding from the audio alone (language and task forced, no label tokens);
        ``language`` (a code) overrides the model's own, for a batch in another language."""
        hp, decoding = self.hparams, self.decoding
        language = language or self.language
        tokenizer = self.processor.tokenizer
        features = input_features.to(self.dtype_of_inputs())
        with self.decoding_mode(), merged(self.model, decoding.merge_lora):
            if decoding.method == "static":
                ids = greedy(
                    self.model.get_base_model(),
                    features,
                    prompt_ids(tokenizer, language),
                    decoding.max_new_tokens,
                    cuda_graph=graphed(decoding.method, decoding.cuda_graph, hp.quantization),
                )
            else:
                ids = self.model.generate(
                    input_features=features,
                    language=language,
                    task=hp.task,
                    max_new_tokens=decoding.max_new_tokens,
                    use_cache=True,
                )
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        special = set(tokenizer.all_special_ids)
        degenerate = [
            is_degenerate([t for t in row.tolist() if t not in special], decoding.max_new_tokens) for row in ids
        ]
        return [clean_transcript(t) for t in texts], degenerate

    @contextlib.contextmanager
    def decoding_mode(self) -> Iterator[None]:
        """How the layers run whenever the model decodes (transcribe, language detection): eagerly, since
        generate() calls them with a new cache length every token and compiling that would recompile until
        torch gives up; with the configured attention kernels; FP8 layers in the base's dtype."""
        with (
            torch.compiler.set_stance("force_eager"),
            self.attention(),
            fp8.high_precision(self.model) if self.speed.fp8 else contextlib.nullcontext(),
        ):
            yield

    def dtype_of_inputs(self) -> torch.dtype:
        conv = self.model.get_base_model().model.encoder.conv1.weight
        return conv.dtype

    def _evaluate(self, batch: Batch, stage: str, dataloader_idx: int = 0) -> list[tuple[str, str]] | None:
        if not batch["paths"]:
            return None
        language = batch.get("language") or self.language
        preds, degenerate = self.transcribe(batch["input_features"], language)
        refs = batch["texts"]
        self.scores.update(stage, dataloader_idx, preds, refs, language, degenerate)
        if self._trainer is not None and self.trainer.testing:
            self.test_transcripts += zip(batch["paths"], refs, preds)
        return list(zip(refs, preds))

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[tuple[str, str]] | None:
        """The (reference, prediction) pairs, for the callbacks (``ValidationReport``'s examples)."""
        return self._evaluate(batch, "val", dataloader_idx)

    def on_test_epoch_start(self) -> None:
        self.test_transcripts = []

    def test_step(self, batch: Batch, batch_idx: int) -> list[tuple[str, str]] | None:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        if not batch["paths"]:
            return []
        features, detected = batch["input_features"], None
        if self.language is None:  # auto: each clip's own language, the clips of one language decoded together
            with self.decoding_mode():
                detected = detect_languages(
                    self.model.get_base_model(), features.to(self.dtype_of_inputs()), self.processor.tokenizer
                )
            texts = [""] * len(detected)
            for code in dict.fromkeys(detected):
                rows = [i for i, c in enumerate(detected) if c == code]
                for i, text in zip(rows, self.transcribe(features[rows], code)[0]):
                    texts[i] = text
        else:
            texts, _ = self.transcribe(features)
        rows = [
            {"path": p, "text": t, "duration": round(d, 3)}
            for p, t, d in zip(batch["paths"], texts, batch["durations"].tolist())
        ]
        return [row | {"language": code} for row, code in zip(rows, detected)] if detected else rows

    def setup(self, stage: str) -> None:
        if self.language is None and stage != "predict":
            raise ValueError(
                f"model.language: auto only transcribes (predict); {stage} needs the transcripts' language"
            )
        data = self.trainer.datamodule if self._trainer is not None else None
        if getattr(data, "scored", None):  # each validation dataloader's prefix, from the DataModule
            self.scores = Scoreboard(*data.scored)

    def _log_metrics(self, stage: str) -> None:
        # fit's validation scores reach the logger from on_validation_end, at the step the adapters record.
        self.scores.log(self, stage, direct=not (stage == "val" and self.trainer.state.fn == "fit"))

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def on_validation_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        metrics = {
            k: float(v)
            for k, v in self.trainer.callback_metrics.items()
            if k.startswith(("val/", "val_retain/", "val_nospeech/"))
        }
        # At the optimizer steps taken, as the adapter saved now records them: Lightning's own logging step is
        # one less when validation runs mid-epoch (TensorBoard said 16 where the adapter said 17).
        if metrics and self.trainer.state.fn == "fit" and self.logger is not None and self.trainer.is_global_zero:
            self.logger.log_metrics(metrics, step=self.global_step)

    # -- checkpoints ------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint holds the trainable (adapter) tensors and the RNG states; the frozen base is rebuilt from
        ``model``, the data position comes from the DataModule, the WER history from ``ValidationReport``."""
        checkpoint["state_dict"] = trainable_state(self, checkpoint["state_dict"])
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

    def language_name(self) -> str | None:
        return LANGUAGES[self.language] if self.language else None

    def adapter_record(self) -> dict[str, Any]:
        """What an adapter folder records about its training (``adapter.save_adapter`` writes it):
        enough to rebuild the same base and decode in the right language."""
        hp = self.hparams
        return {
            "base_model": hp.model,
            "from_config": hp.from_config,
            "init_seed": hp.init_seed,
            "language": self.language_name(),
            "task": hp.task,
            "quantization": hp.quantization,
            "trim_encoder": self.speed.trim_encoder,
        }
