import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import PeftModel

from lightning_asr.callbacks import AdapterCheckpoint
from lightning_asr.model.adapter import save_adapter
from lightning_asr.model.whisper import load_base


def test_adapter_folder_loads_with_plain_peft_and_gives_the_same_outputs(tmp_path, tiny_model, trained):
    save_adapter(trained, tmp_path / "last", {"val/wer": 0.5})
    files = {p.name for p in (tmp_path / "last").iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer_config.json",
        "processor_config.json",
        "lightning_asr.json",
    } <= files
    info = json.loads((tmp_path / "last" / "lightning_asr.json").read_text())
    assert info["language"] == "marathi" and info["task"] == "transcribe" and info["metrics"] == {"val/wer": 0.5}
    # Plain peft, no project code: the same base loaded the same way + the folder.
    reloaded = PeftModel.from_pretrained(load_base(tiny_model, "int8"), tmp_path / "last").eval()
    features = torch.randn(2, 80, 400)
    labels = torch.tensor([[50258, 50320, 50359, 50363, 400, 50257]] * 2)
    with torch.no_grad():
        expected = trained.model(input_features=features, decoder_input_ids=labels).logits
        got = reloaded(input_features=features, decoder_input_ids=labels).logits
    torch.testing.assert_close(got, expected)
    with torch.no_grad():
        base_only = load_base(tiny_model, "int8")(input_features=features, decoder_input_ids=labels).logits
    assert not torch.allclose(base_only, expected)  # the adapter does change the outputs


def test_a_crash_mid_write_leaves_the_previous_adapter_intact(tmp_path, trained, monkeypatch):
    save_adapter(trained, tmp_path / "last")
    before = (tmp_path / "last" / "adapter_model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trained.processor, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(trained, tmp_path / "last")
    assert (tmp_path / "last" / "adapter_model.safetensors").read_bytes() == before
    assert (tmp_path / "last" / "tokenizer_config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no half-written temp folder left behind


def test_the_adapter_records_an_absolute_base_that_loads_from_anywhere(tmp_path, tiny_model, trained, monkeypatch):
    from lightning_asr.model.adapter import adapter_info

    monkeypatch.chdir(Path(tiny_model).parent)
    trained.hparams.model = Path(tiny_model).name  # trained from a relative path
    try:
        save_adapter(trained, tmp_path / "a")
    finally:
        trained.hparams.model = tiny_model
    assert adapter_info(str(tmp_path / "a"))["base_model"] == tiny_model
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_model  # plain peft finds it too
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"\x00" * 12)
    with pytest.raises(ValueError, match="adapter_model.safetensors: not a readable safetensors file"):
        adapter_info(str(tmp_path / "a"))


def test_top_k_keeps_the_best_and_best_tracks_the_leader(tmp_path, trained):
    callback = AdapterCheckpoint(dirpath=str(tmp_path), monitor="val/wer", mode="min", save_top_k=2)
    for step, wer in [(10, 0.9), (20, 0.5), (30, 0.7), (40, 0.8), (50, 0.4)]:
        trainer = SimpleNamespace(global_step=step, callback_metrics={"val/wer": torch.tensor(wer)})
        trained._trainer = None
        callback._save(trainer, trained)
        assert (tmp_path / "last").is_dir()
    kept = sorted(p.name for p in Path(tmp_path).iterdir() if p.name.startswith("step-"))
    assert kept == ["step-20", "step-50"]
    assert json.loads((tmp_path / "best" / "lightning_asr.json").read_text())["metrics"]["val/wer"] == pytest.approx(
        0.4
    )
    assert not any(p.name.startswith(".") for p in Path(tmp_path).iterdir())  # no temp folders left behind


def test_a_folder_with_another_runs_adapters_is_refused_unless_resuming_or_asked(tmp_path, trained):
    AdapterCheckpoint(dirpath=str(tmp_path / "new")).check_not_taken(None, resuming=False)  # nothing there yet
    save_adapter(trained, tmp_path / "last")
    with pytest.raises(FileExistsError, match=r"already holds another run's adapters \(last\)"):
        AdapterCheckpoint(dirpath=str(tmp_path)).check_not_taken(None, resuming=False)
    AdapterCheckpoint(dirpath=str(tmp_path)).check_not_taken(None, resuming=True)
    AdapterCheckpoint(dirpath=str(tmp_path), overwrite=True).check_not_taken(None, resuming=False)


def test_throughput_accepts_batches_of_clips_shorter_than_a_second():
    """Real speech (spoken digits, 0.14-0.6 s) gives batches with fewer seconds than clips: Lightning's
    throughput refuses lengths below samples, which stopped every fit on such data at its first step."""
    from lightning.fabric.utilities.throughput import Throughput

    from lightning_asr.callbacks import SpeechThroughput

    batch = {"durations": torch.tensor([0.144, 0.3, 0.25, 0.4, 0.2, 0.31, 0.5, 0.18]), "paths": ["x"] * 8}
    monitor = SpeechThroughput()
    frames = monitor.length_fn(batch)
    throughput = Throughput(window_size=2)
    for step in (1, 2):
        throughput.update(time=float(step), batches=step, samples=8 * step, lengths=frames * step)
    assert throughput.compute()["device/items_per_sec"] == frames == 228  # 100 x each duration, rounded


@pytest.mark.parametrize("language, metric", [("en", "val/wer_norm"), ("zh", "val/cer")])
def test_best_is_ranked_by_normalised_wer_or_by_cer_where_words_have_no_spaces(tmp_path, trained, language, metric):
    """An all-caps corpus scored case-sensitively ranks adapters by case: the one that writes the right words in lower
    case (normalised WER 0.1, orthographic 1.0) must be kept as best/, not the one that writes fewer of them in caps."""
    callback = AdapterCheckpoint(dirpath=str(tmp_path))
    callback.on_fit_start(SimpleNamespace(ckpt_path=None, checkpoint_callbacks=[]), SimpleNamespace(language=language))
    assert callback.monitor == metric
    for step, wer, wer_norm, cer in [(10, 1.0, 0.1, 0.05), (20, 0.6, 0.5, 0.4)]:
        trainer = SimpleNamespace(
            global_step=step,
            callback_metrics={
                "val/wer": torch.tensor(wer),
                "val/wer_norm": torch.tensor(wer_norm),
                "val/cer": torch.tensor(cer),
            },
        )
        trained._trainer = None
        callback._save(trainer, trained)
    assert json.loads((tmp_path / "best" / "lightning_asr.json").read_text())["metrics"]["val/wer"] == pytest.approx(
        1.0
    )
