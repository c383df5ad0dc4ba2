"""The shapes users fine-tune today, tiny and random: large-v3 (128 mel bins), large-v3-turbo (a decoder far shallower
than its encoder) and distil-large-v3 (a 2-layer decoder), through training, both decodings, transcription with
subtitles and export. Nothing in the package may assume large-v2's 80 bins or equal depths."""

import json
from pathlib import Path

import lightning as L
import pytest
import soundfile as sf

from lightning_asr.callbacks import ValidationReport
from lightning_asr.data import SpeechDataModule
from lightning_asr.deploy.export import export
from lightning_asr.deploy.transcribe import transcribe
from lightning_asr.model.adapter import save_adapter
from lightning_asr.model.knobs import Decoding, Speed
from lightning_asr.model.lora import LoRA
from lightning_asr.model.module import WhisperLoRA
from tests.conftest import tone, write_common_voice, write_tiny_model

SHAPES = {  # the layers in tiny: encoder deeper than decoder where the real model's is
    "large-v3": dict(encoder_layers=2, decoder_layers=2),
    "large-v3-turbo": dict(encoder_layers=4, decoder_layers=1),
    "distil-large-v3": dict(encoder_layers=4, decoder_layers=2),
}


def write_v3_shape(folder: Path, **layers) -> str:
    """A tiny Whisper with 128 mel bins and a feature extractor that makes them."""
    write_tiny_model(folder, num_mel_bins=128, **layers)
    for name in ("preprocessor_config.json", "processor_config.json"):
        config = json.loads((folder / name).read_text())
        config.get("feature_extractor", config)["feature_size"] = 128
        (folder / name).write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize(
    ("shape", "quantization"), [("large-v3", "nf4"), ("large-v3-turbo", "int8"), ("distil-large-v3", "none")]
)
def test_a_v3_shape_trains_packed_and_timestamped_and_validates_both_ways(tmp_path, shape, quantization):
    model = write_v3_shape(tmp_path / shape, **SHAPES[shape])
    root = write_common_voice(tmp_path / "cv", rows_per_split=3)
    data = SpeechDataModule(
        path=str(root),
        model=model,
        language="mr",
        num_workers=0,
        batch_size=2,
        eval_batch_size=2,
        pack_share=0.5,
        timestamp_share=0.5,
    )
    module = WhisperLoRA(
        model=model,
        language="mr",
        quantization=quantization,
        lora=LoRA(r=4),
        warmup_steps=1,
        speed=Speed(gradient_checkpointing=True),
        decoding=Decoding(method="static", max_new_tokens=6),
    )
    report = ValidationReport()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[report],
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, data)
    assert module.model.get_base_model().config.num_mel_bins == 128
    assert next(iter(data.train_dataloader()))["input_features"].shape[1] == 128
    assert [step for step, *_ in report.history] == [0, 3]  # zero-shot, then after the epoch of 6 clips
    static = float(trainer.callback_metrics["val/wer"])
    module.decoding = Decoding(method="generate", max_new_tokens=6)
    generated = trainer.validate(module, data, verbose=False)[0]["val/wer"]
    assert generated == pytest.approx(static)  # greedy either way: the same transcripts


def test_a_v3_shape_transcribes_long_audio_with_subtitles_and_exports_with_its_check(tmp_path, capsys):
    model = write_v3_shape(tmp_path / "turbo", **SHAPES["large-v3-turbo"])
    module = WhisperLoRA(model=model, language="mr", quantization="none", lora=LoRA(r=4))
    module.configure_model()
    save_adapter(module, tmp_path / "adapter")
    talk = tmp_path / "talk.wav"
    sf.write(talk, tone(9.0, 16000), 16000)  # past the tiny model's 4 s window: decoded window by window
    out = tmp_path / "out"
    code = transcribe(
        [str(talk)],
        adapter=str(tmp_path / "adapter"),
        output=str(out),
        num_workers=0,
        accelerator="cpu",
        max_new_tokens=4,
        timestamps=True,
        subtitles=str(tmp_path / "subs"),
    )
    assert code == 0
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row["path"].endswith("talk.wav") and "segments" in row
    assert {p.suffix for p in (tmp_path / "subs").iterdir()} == {".srt", ".vtt"}
    root = write_common_voice(tmp_path / "cv", rates=(16000,))
    code = export(
        str(tmp_path / "adapter"),
        str(tmp_path / "merged"),
        dtype="float32",
        check=str(root / "mr"),
        check_limit=2,
        max_new_tokens=4,
        num_workers=0,
        accelerator="cpu",
    )
    assert code == 0 and json.loads((tmp_path / "merged" / "parity.json").read_text())["within_tolerance"]
    merged = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert (merged["num_mel_bins"], merged["encoder_layers"], merged["decoder_layers"]) == (128, 4, 1)


def test_a_language_the_checkpoint_lacks_is_an_error_naming_the_checkpoint(tiny_model):
    # transformers knows Cantonese (large-v3's); a v2-era tokenizer has no <|yue|> and would build a prefix without a
    # language, <|yue|> resolving to <|endoftext|>.
    with pytest.raises(ValueError, match=r"cantonese \(yue\) is not a language of .*tiny-whisper.*no <\|yue\|> token"):
        WhisperLoRA(model=tiny_model, language="Cantonese")
    with pytest.raises(ValueError, match="no <\\|yue\\|> token"):
        SpeechDataModule(model=tiny_model, language="yue", path="unused").setup("predict")
