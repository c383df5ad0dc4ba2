import json

import pytest
import soundfile as sf
import torch

from lightning_asr.deploy.export import export
from lightning_asr.deploy.transcribe import transcribe
from lightning_asr.model.adapter import save_adapter
from lightning_asr.model.lora import merge
from tests.conftest import tone


@pytest.fixture()
def adapter(tmp_path, trained):  # noqa: F811
    save_adapter(trained, tmp_path / "adapter")
    return str(tmp_path / "adapter")


def test_transcribe_writes_text_and_jsonl(tmp_path, adapter):
    clips = []
    for i, rate in enumerate((8000, 48000)):
        sf.write(tmp_path / f"c{i}.wav", tone(1.5, rate, seed=i), rate)
        clips.append(str(tmp_path / f"c{i}.wav"))
    texts = {}
    for decoding in ("generate", "static"):
        out = tmp_path / decoding
        transcribe(
            clips,
            adapter=adapter,
            output=str(out),
            num_workers=0,
            max_new_tokens=5,
            accelerator="cpu",
            decoding=decoding,
        )
        rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
        assert [r["path"] for r in rows] == clips and [r["duration"] for r in rows] == [1.5, 1.5]
        assert out.with_suffix(".txt").read_text().splitlines() == [f"{r['path']}\t{r['text']}" for r in rows]
        texts[decoding] = [r["text"] for r in rows]
    assert texts["static"] == texts["generate"]


def test_export_merges_into_a_standard_whisper_folder(tmp_path, tiny_model, adapter, trained):  # noqa: F811
    from transformers import WhisperForConditionalGeneration, pipeline

    export(adapter, str(tmp_path / "exported"), dtype="float32")
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "exported")
    assert not any("lora" in name for name, _ in model.named_parameters())
    features = torch.randn(1, 80, 400)
    ids = torch.tensor([[50258, 50320, 50359, 50363]])
    with torch.no_grad():
        merged = model(input_features=features, decoder_input_ids=ids).logits
        trained_unquantized = merge_reference(tiny_model, adapter)(
            input_features=features, decoder_input_ids=ids
        ).logits
    torch.testing.assert_close(merged, trained_unquantized, rtol=1e-4, atol=1e-4)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "exported"), device=-1)
    assert isinstance(
        asr({"raw": tone(1.0, 16000), "sampling_rate": 16000}, generate_kwargs={"max_new_tokens": 3})["text"], str
    )


def merge_reference(tiny_model, adapter):
    from peft import PeftModel

    from lightning_asr.model.whisper import load_base

    return PeftModel.from_pretrained(load_base(tiny_model, "none"), adapter).eval()


def test_merge_refuses_a_quantized_base(trained):  # noqa: F811
    with pytest.raises(ValueError, match="base is quantized.*Load the base unquantized"):
        merge(trained.model)
