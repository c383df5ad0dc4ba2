"""The real pretrained whisper-base from ../shared (skipped without it)."""

import lightning as L
import torch

from lightning_asr.data import SpeechDataModule
from lightning_asr.model.knobs import Decoding
from tests.conftest import SHARED, requires_shared

BASE = str(SHARED / "models" / "whisper-base")
DATA = str(SHARED / "data" / "cv-synth")


def score(clips: int, method: str = "generate") -> tuple[dict, list[tuple[str, str, str]]]:
    """The base's test metrics on the first cv-synth/en test clips, fp32, and its (clip, reference, prediction) rows."""
    from lightning_asr.model.module import WhisperLoRA

    module = WhisperLoRA(
        model=BASE,
        language="English",
        quantization="none",
        dtype="float32",
        decoding=Decoding(method),
        validate_before_training=False,
    )
    data = SpeechDataModule(
        path=DATA,
        locale="en",
        model=BASE,
        language="English",
        eval_batch_size=10,
        num_workers=0,
        max_samples=clips,
        processor=module.processor,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.test(module, data, verbose=False)[0]
    return {k.removeprefix("test/"): v for k, v in metrics.items()}, module.test_transcripts


@requires_shared
def test_zero_shot_english_wer_through_our_loader_and_normaliser():
    """The adapter-free base on the first 20 cv-synth/en test clips.

    Measured 35.67 % (normalised) in fp32 on CPU here and on an H100 (benchmarks/quality.py,
    results in git history): a change to the loader, decode or normaliser that moves it is a regression.
    """
    result, transcripts = score(20)
    assert len(transcripts) == 20
    assert 0.30 < result["wer_norm"] < 0.40, result


@requires_shared
def test_lora_on_whisper_base_lowers_training_loss_on_cpu():
    from lightning_asr.model.knobs import Speed
    from lightning_asr.model.lora import LoRA
    from lightning_asr.model.module import WhisperLoRA
    from tests.conftest import train_steps

    torch.manual_seed(0)
    module = WhisperLoRA(
        model=BASE,
        language="Marathi",
        quantization="int8",
        speed=Speed(gradient_checkpointing=False),
        lora=LoRA(dropout=0.0),
        validate_before_training=False,
    )
    module.configure_model()
    data = SpeechDataModule(
        path=DATA, model=BASE, language="Marathi", train_split="train", max_samples=2, num_workers=0
    )
    data.setup("fit")
    batch = data.collate([data.datasets["train"][i] for i in range(2)])  # two clips: half the CPU time of four
    losses = train_steps(module, batch, steps=4, lr=1e-3)
    assert losses[-1] < 0.8 * losses[0], losses


@requires_shared
def test_static_decoding_transcribes_real_speech_like_generate():
    """Pretrained whisper-base on real-length speech: words, EOS at each clip's own step, fp32."""
    runs = {d: score(6, d) for d in ("generate", "static")}
    assert runs["static"][1] == runs["generate"][1]
    assert [runs["static"][0][k] for k in ("wer", "wer_norm", "cer")] == [
        runs["generate"][0][k] for k in ("wer", "wer_norm", "cer")
    ]
    assert runs["static"][0]["wer_norm"] < 0.5


@requires_shared
def test_transcribe_without_a_language_detects_each_files_language(tmp_path):
    import json

    from tests.conftest import run

    # Real recorded English (whisper-base calls one of the synthetic espeak clips Swedish).
    clips = sorted((SHARED / "data/real/fsdd-takes5-49/en/clips").iterdir())[:3]
    run(["transcribe", *map(str, clips), "--base", BASE, "--num_workers", "0", "--accelerator", "cpu"], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    assert [r["language"] for r in rows] == ["en"] * 3 and all(r["text"] for r in rows)
