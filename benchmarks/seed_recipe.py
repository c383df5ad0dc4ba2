"""The PEFT guide's int8 Whisper LoRA recipe, ported to today's APIs and nothing more: the yardstick.

What changed from the guide, and why (everything else is as it was):
- ``load_in_8bit=True`` -> ``BitsAndBytesConfig(load_in_8bit=True)``; ``device_map`` names this GPU.
- ``prepare_model_for_int8_training`` -> ``prepare_model_for_kbit_training`` (its successor).
- ``load_dataset("mozilla-foundation/common_voice_11_0", "mr")`` no longer runs (datasets >= 4 has
  no loading scripts) and ``Audio(sampling_rate=16000)`` needs FFmpeg/torchcodec: rows come from the
  same local release our data module reads, decoded by the same soundfile+soxr decoder.
- Its evaluation fed label tokens to the decoder; evaluation lives in ``quality.py``, generating from
  the audio alone for both recipes.

Usage: ``python -m benchmarks.seed_recipe MODEL LOCALE_FOLDER OUT [--epochs 3 | --max-steps N] [--language English]``
(GPU) writes the adapter to ``OUT/adapter`` and ``OUT/metrics.json`` (wall time, steps).
"""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class DataCollatorSpeechSeq2SeqWithPadding:
    """The guide's collator, verbatim apart from type hints."""

    processor: Any

    def __call__(self, features: list[dict]) -> dict:
        input_features = [{"input_features": feature["input_features"]} for feature in features]
        batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")
        label_features = [{"input_ids": feature["labels"]} for feature in features]
        labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        if (labels[:, 0] == self.processor.tokenizer.bos_token_id).all().cpu().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch


def build_model(model_name: str, from_config: bool = False):
    """The guide's model: int8 base, prepared for k-bit training, LoRA r=32 on q_proj/v_proj.
    ``from_config``: a random base built from the folder's config (smoke runs on CPU)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, WhisperForConditionalGeneration

    device = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    if from_config:
        from lightning_asr.model.whisper import load_base

        model = load_base(model_name, "int8", "cuda:0" if torch.cuda.is_available() else "cpu", from_config=True)
    else:
        model = WhisperForConditionalGeneration.from_pretrained(
            model_name, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map=device
        )
    model.generation_config.forced_decoder_ids = None
    model.generation_config.suppress_tokens = []
    model = prepare_model_for_kbit_training(model)

    def make_inputs_require_grad(module, input, output):
        output.requires_grad_(True)

    model.model.encoder.conv1.register_forward_hook(make_inputs_require_grad)
    config = LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "v_proj"], lora_dropout=0.05, bias="none")
    model = get_peft_model(model, config)
    model.print_trainable_parameters()
    model.config.use_cache = False
    return model


def prepare(processor, rows: list[dict], num_proc: int | None = None):
    """The guide's ``prepare_dataset`` map: features and labels computed up front.

    The guide used ``num_proc=2``; forking after torch has started its threads deadlocks here, so one process.
    """
    import datasets

    from lightning_asr.data.audio import load_audio

    def prepare_dataset(batch):
        audio = load_audio(batch["audio"])
        batch["input_features"] = processor.feature_extractor(audio, sampling_rate=16000).input_features[0]
        batch["labels"] = processor.tokenizer(batch["text"]).input_ids
        return batch

    dataset = datasets.Dataset.from_list(rows)
    return dataset.map(prepare_dataset, remove_columns=dataset.column_names, num_proc=num_proc)


def make_trainer(
    model, processor, dataset, out: str, max_steps: int = -1, seed: int = 42, callbacks=None, epochs: int = 3
):
    """The guide's ``Seq2SeqTrainingArguments`` (fp16 where a GPU is present)."""
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    training_args = Seq2SeqTrainingArguments(
        output_dir=out,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        warmup_steps=50,
        num_train_epochs=epochs,
        max_steps=max_steps,
        fp16=torch.cuda.is_available(),
        per_device_eval_batch_size=8,
        generation_max_length=128,
        logging_steps=25,
        remove_unused_columns=False,
        label_names=["labels"],
        save_strategy="no",
        report_to=[],
        seed=seed,
    )
    return Seq2SeqTrainer(
        args=training_args,
        model=model,
        train_dataset=dataset,
        data_collator=DataCollatorSpeechSeq2SeqWithPadding(processor=processor),
        processing_class=processor.feature_extractor,
        callbacks=callbacks,
    )


def train(
    model_name: str,
    data: str,
    out: str,
    language: str = "Marathi",
    max_steps: int = -1,
    seed: int = 42,
    from_config: bool = False,
    limit: int | None = None,
    epochs: int = 3,
) -> dict:
    from transformers import WhisperProcessor

    from lightning_asr.data.sources import common_voice_index

    start = time.perf_counter()
    processor = WhisperProcessor.from_pretrained(model_name, language=language, task="transcribe")
    # ``data`` is the locale folder itself, which common_voice_index takes whatever the locale.
    dataset = prepare(processor, common_voice_index(data, "", "train")[0].to_pylist()[:limit])
    model = build_model(model_name, from_config)
    trainer = make_trainer(model, processor, dataset, out, max_steps, seed, epochs=epochs)
    train_start = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - train_start
    model.save_pretrained(Path(out) / "adapter")
    metrics = {
        "wall_seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0,
    }
    (Path(out) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; -1: --epochs decide")
    parser.add_argument("--epochs", type=int, default=3, help="the guide's 3 epochs")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--language", default="Marathi")
    parser.add_argument("--from-config", action="store_true", help="a random base from the model folder's config")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N clips only")
    args = parser.parse_args()
    print(
        json.dumps(
            train(
                args.model,
                args.data,
                args.out,
                args.language,
                args.max_steps,
                args.seed,
                args.from_config,
                args.limit,
                args.epochs,
            ),
            indent=2,
        )
    )
