import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lightning_asr.cli import main
from tests.conftest import CLI, DEMO, REPO, demo_args, run, sigterm_once_training, user_args


def printed_config(capsys, *configs: str | Path, args: tuple[str, ...] = ()) -> dict:
    """``lightning-asr fit --config … --print_config``, in this process: the same parser as the command, without
    a fresh interpreter per config (the command itself runs as typed in test_recipe_config_is_the_guides)."""
    with pytest.raises(SystemExit) as exit:
        main(["fit", *(arg for config in configs for arg in ("--config", str(config))), *args, "--print_config"])
    assert exit.value.code in (0, None), capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    "config",
    sorted(
        str(p.relative_to(REPO))
        for p in [*(REPO / "configs").glob("*.yaml"), *(REPO / "benchmarks/configs").glob("*.yaml")]
    ),
)
def test_every_config_parses(config, capsys):
    printed = printed_config(capsys, REPO / config)
    assert {"model", "data", "trainer"} <= set(printed)


def test_recipe_config_lists_every_field_and_readme_every_config(capsys):
    """README, "Configs": the recipe config lists every field (of the groups), and the table names every shipped config."""
    printed = printed_config(capsys, REPO / "configs/whisper-large-v2-int8-mr.yaml")
    recipe = yaml.safe_load((REPO / "configs/whisper-large-v2-int8-mr.yaml").read_text())
    for group in ("decoding", "speed", "lora", "spec_augment"):
        assert set(recipe["model"][group]) == set(printed["model"][group]), group
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Configs") : readme.index("## After training")]
    assert [p.name for p in sorted((REPO / "configs").glob("*.yaml")) if f"| `{p.name}` |" not in table] == []


def test_the_readmes_speed_flags_parse_as_typed(capsys):
    """docs/configs.md: ``--model.speed.offload_encoder true`` and ``--model.lora.encoder false`` as a user types them."""
    printed = printed_config(
        capsys, DEMO, args=("--model.speed.offload_encoder", "true", "--model.lora.encoder", "false")
    )
    assert printed["model"]["speed"]["offload_encoder"] is True and printed["model"]["lora"]["encoder"] is False


def test_overlay_configs_change_only_their_own_fields_on_top_of_another(capsys):
    """packed.yaml and augment.yaml say "combine with a recipe": on top of the demo they set their own knob and leave the rest."""
    demo = printed_config(capsys, DEMO)
    noise = {"noise_prob": 0.5, "snr_min_db": 10.0, "snr_max_db": 30.0}
    masks = {"spec_augment": demo["model"]["spec_augment"] | {"time_prob": 0.05, "feature_prob": 0.05}}
    for overlay, data, model in (
        ("packed.yaml", {"pack_share": 0.5}, {}),
        ("augment.yaml", {"augment": demo["data"]["augment"] | {"speed_factors": [0.9, 1.0, 1.1]} | noise}, masks),
    ):
        both = printed_config(capsys, DEMO, REPO / "configs" / overlay)
        assert (
            both["data"] == demo["data"] | data
            and both["model"] == demo["model"] | model
            and both["trainer"] == demo["trainer"]
        )


def test_recipe_config_is_the_guides(tmp_path):
    out = yaml.safe_load(
        run(["fit", "--config", str(REPO / "configs/whisper-large-v2-int8-mr.yaml"), "--print_config"], tmp_path).stdout
    )
    model, data, trainer = out["model"], out["data"], out["trainer"]
    assert (model["model"], model["language"], model["task"], model["quantization"]) == (
        "openai/whisper-large-v2",
        "Marathi",
        "transcribe",
        "int8",
    )
    lora = model["lora"]
    assert (lora["r"], lora["alpha"], lora["dropout"], lora["target_modules"], lora["bias"]) == (
        32,
        64,
        0.05,
        ["q_proj", "v_proj"],
        "none",
    )
    assert (model["learning_rate"], model["warmup_steps"], model["decoding"]["max_new_tokens"]) == (1e-3, 50, 128)
    assert (model["decoding"]["method"], model["speed"]["gradient_checkpointing"], model["speed"]["trim_encoder"]) == (
        "generate",
        True,
        False,
    )
    assert (
        model["spec_augment"]["time_prob"] == model["spec_augment"]["feature_prob"] == 0.0
    )  # no augmentation, as the guide
    assert (data["locale"], data["train_split"], data["val_split"], data["batch_size"]) == (
        "mr",
        "train+dev",
        "test",
        8,
    )
    assert (trainer["max_epochs"], trainer["precision"], trainer["check_val_every_n_epoch"]) == (3, "16-mixed", 1)
    assert trainer["gradient_clip_val"] == 1.0  # the HF Trainer's max_grad_norm default
    assert "language" not in data and "model" not in data  # linked from the model: set in one place
    assert "processor" not in data and "trim_encoder" not in data  # handed over from the model


def test_demo_fit_writes_adapter_and_tensorboard_and_reports_wer(demo_run):
    tmp_path, out = demo_run
    assert "WER:" in out.stdout and "at step 0 ->" in out.stdout
    printed = out.stdout + out.stderr
    assert "MatMul8bitLt" not in printed and printed.count("\n") < 80  # no per-matmul log flood
    assert "Failed to load" not in printed and "Enum subclass" not in printed  # torchao's and torch's import notes
    assert "Step   (epoch" in printed and "6/6" in printed  # the bar counts steps toward max_steps
    assert "adapter: best/ is the adapter of the lowest val/wer_norm" in printed
    # Output that is not a terminal (here a pipe) still shows progress: a line every log_every_n_steps (2) steps.
    assert "step 2/6 (epoch" in printed and "step 6/6 (epoch" in printed
    for name in ("last", "best"):
        folder = tmp_path / "adapters" / name
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    events = list((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent), size_guidance={"scalars": 0}).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {
        "train/loss",
        "train/lr",
        "val/wer",
        "val/wer_norm",
        "val/cer",
        "val/degenerate",
        "train/device/samples_per_sec",
        "train/device/items_per_sec",
    } <= tags
    assert [e.step for e in acc.Scalars("val/wer")][0] == 0  # the zero-shot point
    assert "val/examples/text_summary" in acc.Tags()["tensors"]


def trained_weights(ckpt: Path) -> dict:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return state


def test_resume_after_sigkill_with_ckpt_path_last_continues_the_same_run(tmp_path):
    common = [
        "--model.validate_before_training=false",
        "--data.num_workers=0",
        "--model.lora.dropout=0.1",
        "--trainer.limit_val_batches=0",
        "--data.max_samples=16",
        "--data.batch_size=4",
        "--trainer.callbacks.every_n_train_steps=3",
    ]
    # Uninterrupted: 6 steps (1.5 epochs of 4 batches, so the resume point is mid-epoch).
    (tmp_path / "a").mkdir()
    run(user_args("--trainer.max_steps=6", *common), tmp_path / "a")
    # Interrupted: the same run, SIGKILLed once its step-3 checkpoint exists.
    (tmp_path / "b").mkdir()
    env = os.environ | {"PYTHONPATH": str(REPO)}
    run_dir = tmp_path / "b/runs/demo/version_0"
    proc = subprocess.Popen(
        CLI + user_args("--trainer.max_steps=200", *common),
        cwd=tmp_path / "b",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (run_dir / "checkpoints/last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 3
    # The README's command, typed again with --ckpt_path last.
    out = run(user_args("--trainer.max_steps=6", *common, "--ckpt_path", "last"), tmp_path / "b")
    assert "Restoring states from the checkpoint path at" in out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "b/runs/demo").iterdir()) == ["version_0"]  # the same run folder
    expected = trained_weights(tmp_path / "a/runs/demo/version_0/checkpoints/last.ckpt")
    got = trained_weights(run_dir / "checkpoints/last.ckpt")
    assert expected.keys() == got.keys() and expected
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
    assert json.loads((run_dir / "adapters/last/lightning_asr.json").read_text())["global_step"] == 6
    # Slim: the checkpoint holds the adapter, its optimizer state and a little bookkeeping, not the base.
    adapter_bytes = sum(v.numel() * v.element_size() for v in expected.values())
    assert (run_dir / "checkpoints/last.ckpt").stat().st_size < 4 * adapter_bytes + 200_000
    # A fresh run opens a new folder and leaves the first run's adapters alone.
    before = (run_dir / "adapters/last/adapter_model.safetensors").read_bytes()
    run(user_args("--trainer.max_steps=2", *common), tmp_path / "b")
    assert (tmp_path / "b/runs/demo/version_1/adapters/last").is_dir()
    assert (run_dir / "adapters/last/adapter_model.safetensors").read_bytes() == before


def test_sigterm_saves_the_step_it_stopped_at_and_ckpt_path_last_resumes_it(tmp_path):
    """kill (SLURM, Kubernetes, a spot notice) between periodic checkpoints loses no steps.

    24 steps an epoch (the demo's 24 training clips, batch 1), so the signal, sent once step 10 is logged,
    lands mid-epoch. On an epoch's last step the resumed weights still drift slightly from an uninterrupted
    run's (docs/training.md); the data position there is test_data's test of a checkpoint
    saved after an epoch's end."""
    common = [
        "--model.validate_before_training=false",
        "--data.num_workers=0",
        "--model.lora.dropout=0.1",
        "--trainer.limit_val_batches=0",
        "--data.max_samples=24",
        "--data.batch_size=1",
        "--trainer.callbacks.every_n_train_steps=1000",
    ]
    (tmp_path / "b").mkdir()
    run_dir = tmp_path / "b/runs/demo/version_0"
    # TensorBoard writes train/loss every 10 steps (the demo's log_every_n_steps): the signal lands after step 10.
    assert (
        sigterm_once_training(
            user_args("--trainer.max_steps=100000", *common), tmp_path / "b", run_dir, tmp_path / "b.log"
        )
        == 143
    )
    step = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)["global_step"]
    assert step >= 10 and json.loads((run_dir / "adapters/last/lightning_asr.json").read_text())["global_step"] == step
    assert f"SIGTERM: stopped at step {step}" in (tmp_path / "b.log").read_text()
    # Resumed to 3 steps past it, the weights are those of the same run uninterrupted.
    run(user_args(f"--trainer.max_steps={step + 3}", *common, "--ckpt_path", "last"), tmp_path / "b")
    (tmp_path / "a").mkdir()
    run(user_args(f"--trainer.max_steps={step + 3}", *common), tmp_path / "a")
    assert_same_adapters(tmp_path / "a/runs/demo/version_0/adapters/last", run_dir / "adapters/last", step + 3)


def test_a_finished_run_extended_with_ckpt_path_last_equals_one_longer_run(tmp_path):
    """A run that ended with its epoch (max_epochs: the recipe's way), given more epochs with --ckpt_path last:
    the same weights as one longer run."""
    common = [
        "--model.validate_before_training=false",
        "--data.num_workers=0",
        "--model.lora.dropout=0.1",
        "--trainer.limit_val_batches=0",
        "--data.max_samples=16",
        "--data.batch_size=4",
        "--trainer.callbacks.every_n_train_steps=1000",
        "--trainer.max_steps=-1",
    ]  # 4 steps an epoch
    for name, epochs in (("b", 2), ("a", 3)):
        (tmp_path / name).mkdir()
        run(user_args(f"--trainer.max_epochs={epochs}", *common), tmp_path / name)
    run_dir = tmp_path / "b/runs/demo/version_0"
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 8
    run(user_args("--trainer.max_epochs=3", *common, "--ckpt_path", "last"), tmp_path / "b")
    assert_same_adapters(tmp_path / "a/runs/demo/version_0/adapters/last", run_dir / "adapters/last", 12)


def assert_same_adapters(expected_dir: Path, got_dir: Path, step: int) -> None:
    """Both adapter folders were saved at ``step`` and hold the same weights."""
    from safetensors.torch import load_file

    assert [json.loads((a / "lightning_asr.json").read_text())["global_step"] for a in (expected_dir, got_dir)] == [
        step
    ] * 2
    expected, got = (load_file(a / "adapter_model.safetensors") for a in (expected_dir, got_dir))
    assert expected.keys() == got.keys() and expected
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)


def test_ckpt_path_last_with_nothing_to_resume_is_an_error(tmp_path):
    out = run(user_args("--ckpt_path", "last"), tmp_path, returncode=1)
    assert "--ckpt_path last: no last.ckpt" in out.stderr and "nothing to resume" in out.stderr
    assert not (tmp_path / "runs/demo").exists()  # stopped before anything was trained or written


def test_a_new_run_refuses_a_folder_holding_another_runs_adapters(tmp_path):
    args = [
        "--trainer.max_steps=1",
        "--model.validate_before_training=false",
        "--trainer.limit_val_batches=0",
        "--data.max_samples=4",
        f"--adapter_checkpoint.dirpath={tmp_path}/mine",
    ]
    run(user_args(*args), tmp_path)
    before = (tmp_path / "mine/last/adapter_model.safetensors").read_bytes()
    out = run(user_args(*args), tmp_path, returncode=2)
    assert "lightning-asr fit: error: adapter_checkpoint.dirpath:" in out.stderr and "Traceback" not in out.stderr
    assert "already holds another run's adapters (last)" in out.stderr and "--ckpt_path last" in out.stderr
    assert "Loading weights" not in out.stderr  # refused before the base loads
    assert (tmp_path / "mine/last/adapter_model.safetensors").read_bytes() == before


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_validate_and_test_with_a_saved_adapter(tmp_path, demo_adapter, stage):
    out = run(
        [
            stage,
            "--config",
            DEMO,
            f"--model.model={REPO}/demo/whisper-tiny-random",
            f"--data.path={REPO}/demo/common_voice",
            f"--model.adapter={demo_adapter}",
            "--data.max_samples=4",
            "--model.decoding.max_new_tokens=4",
        ],
        tmp_path,
    )
    assert {"validate": "val/wer", "test": "test/wer"}[stage] in out.stdout


def test_transcribe_positional_files_from_anywhere_one_row_per_input(tmp_path, demo_adapter):
    import soundfile as sf

    from tests.conftest import tone

    (tmp_path / "elsewhere").mkdir()
    sf.write(tmp_path / "c0.wav", tone(1.5, 8000), 8000)
    sf.write(tmp_path / "c1.wav", tone(1.0, 48000, seed=1), 48000)
    (tmp_path / "page.mp3").write_text("<html>not audio</html>")
    inputs = ["../c0.wav", "../missing.wav", "../page.mp3", str(tmp_path), "../c1.wav"]
    out = run(
        ["transcribe", *inputs, "--adapter", str(demo_adapter), "--num_workers", "0", "--max_new_tokens", "5"],
        tmp_path / "elsewhere",
        returncode=1,
    )  # another working folder: the adapter's base is absolute
    rows = [json.loads(line) for line in (tmp_path / "elsewhere/transcripts.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == inputs
    assert [sorted(r) for r in rows] == [
        ["duration", "path", "text"],
        ["error", "path"],
        ["error", "path"],
        ["error", "path"],
        ["duration", "path", "text"],
    ]
    assert rows[1]["error"].startswith("missing") and rows[2]["error"].startswith("undecodable")
    assert rows[3]["error"].startswith("not_a_file")
    lines = (tmp_path / "elsewhere/transcripts.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == inputs
    assert "wrote 2 transcript(s)" in out.stdout and "failed: ../missing.wav: missing" in out.stderr
    assert out.stdout.count("\n") + out.stderr.count("\n") < 60  # the few lines that matter, no log flood


def test_export_refuses_a_non_empty_folder_unless_asked(tmp_path, demo_adapter):
    run(["export", str(demo_adapter), "whisper-mr", "--dtype", "float32"], tmp_path)
    assert (tmp_path / "whisper-mr/model.safetensors").is_file()
    out = run(["export", str(demo_adapter), "whisper-mr"], tmp_path, returncode=2)
    assert "whisper-mr already holds files" in out.stderr and "Traceback" not in out.stderr
    from lightning_asr.deploy.export import export

    (tmp_path / "whisper-mr/model.safetensors").write_bytes(b"stale")
    export(str(demo_adapter), str(tmp_path / "whisper-mr"), dtype="float32", overwrite=True)
    assert (tmp_path / "whisper-mr/model.safetensors").stat().st_size > 1000


def test_a_corrupt_adapter_file_is_named_before_the_base_loads(tmp_path, demo_adapter):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(demo_adapter, broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (tmp_path / "c.wav").write_bytes((REPO / "demo/common_voice/mr/clips").glob("*.mp3").__next__().read_bytes())
    out = run(["transcribe", "c.wav", "--adapter", str(broken)], tmp_path, returncode=2)
    assert f"{weights}: not a readable safetensors file" in out.stderr and "Loading weights" not in out.stderr


def test_predict_with_the_transcript_writer(tmp_path, demo_adapter):
    run(
        [
            "predict",
            "--config",
            DEMO,
            f"--model.model={REPO}/demo/whisper-tiny-random",
            f"--data.path={REPO}/demo/common_voice",
            f"--model.adapter={demo_adapter}",
            "--data.max_samples=3",
            "--model.decoding.max_new_tokens=4",
            "--trainer.callbacks+=lightning_asr.deploy.transcribe.TranscriptWriter",
            f"--trainer.callbacks.output={tmp_path}/out",
        ],
        tmp_path,
    )
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(Path(r["path"]).is_file() for r in rows)
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert lines == [f"{r['path']}\t{r['text']}" for r in rows]


def test_a_retained_language_is_validated_and_logged_beside_the_target(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(
        user_args(
            "--data.retain.path",
            f"{REPO}/demo/common_voice",
            "--data.retain.locale",
            "mr",
            "--data.retain.language",
            "English",
            "--data.retain.max_samples",
            "4",
            "--data.max_samples=4",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--model.decoding.max_new_tokens=4",
        ),
        tmp_path,
    )
    tags = set(EventAccumulator(str(tmp_path / "runs/demo/version_0")).Reload().Tags()["scalars"])
    assert {"val/wer", "val_retain/wer", "val_retain/wer_norm", "val_retain/cer"} <= tags


def test_augmentation_timestamps_packing_and_decoder_only_lora_train_through_the_cli_as_the_readme_shows(tmp_path):
    from safetensors import safe_open

    run(
        user_args(
            "--model.spec_augment.time_prob",
            "0.05",
            "--model.spec_augment.feature_prob",
            "0.05",
            "--data.augment.speed_factors",
            "[0.9,1.0,1.1]",
            "--data.augment.noise_prob",
            "0.5",
            "--data.timestamp_share",
            "0.5",
            "--data.pack_share",
            "0.5",
            "--model.lora.encoder",
            "false",
            "--model.lora.modules_to_save=[]",
            "--data.max_samples=4",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--model.decoding.max_new_tokens=4",
            "--adapter_checkpoint.dirpath",
            str(tmp_path / "adapters"),
        ),
        tmp_path,
    )
    hparams = yaml.safe_load((tmp_path / "runs/demo/version_0/hparams.yaml").read_text())
    assert hparams["spec_augment"]["time_prob"] == hparams["spec_augment"]["feature_prob"] == 0.05
    assert hparams["augment"]["speed_factors"] == [0.9, 1.0, 1.1] and hparams["augment"]["noise_prob"] == 0.5
    assert hparams["timestamp_share"] == hparams["pack_share"] == 0.5
    with safe_open(tmp_path / "adapters" / "last" / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all(".decoder." in k or "proj_out" in k for k in keys)  # model.lora.encoder: false


def test_the_cli_builds_one_processor_for_model_and_data(tmp_path, monkeypatch):
    import lightning_asr.model.whisper as whisper
    from lightning_asr.cli import ASRCLI
    from lightning_asr.data import SpeechDataModule
    from lightning_asr.model.module import WhisperLoRA

    monkeypatch.setattr("sys.argv", ["lightning-asr"])
    built = []
    load = whisper.load_processor
    monkeypatch.setattr("lightning_asr.model.module.load_processor", lambda *a: built.append(a) or load(*a))
    monkeypatch.setattr("lightning_asr.data.datamodule.load_processor", lambda *a: built.append(a) or load(*a))
    cli = ASRCLI(
        WhisperLoRA, SpeechDataModule, run=False, args=demo_args(tmp_path, "--model.speed.trim_encoder=true")[1:]
    )
    cli.datamodule.setup("validate")
    assert cli.datamodule.processor is cli.model.processor and len(built) == 1
    assert cli.datamodule.hparams.trim_encoder  # model.speed.trim_encoder, linked


def test_transcribe_a_manifest_of_spans_of_one_recording(tmp_path, demo_adapter):
    import soundfile as sf

    from tests.conftest import tone

    sf.write(tmp_path / "talk.wav", np.concatenate([tone(2.0, 16000), tone(1.0, 16000, seed=1)]), 16000)
    (tmp_path / "spans.tsv").write_text("audio\toffset\tduration\ntalk.wav\t0\t2\ntalk.wav\t2\t1\ntalk.wav\t2.5\t4\n")
    run(
        ["transcribe", "spans.tsv", "--adapter", str(demo_adapter), "--num_workers", "0", "--max_new_tokens", "5"],
        tmp_path,
        returncode=1,
    )
    rows = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    # Each row is its span of the file, named as a media fragment, the path as the manifest resolves it.
    assert [r["path"] for r in rows] == ["./talk.wav#t=0,2", "./talk.wav#t=2,3", "./talk.wav#t=2.5,6.5"]
    assert [r.get("duration") for r in rows[:2]] == [2.0, 1.0] and rows[2]["error"].startswith("span_out_of_range")


def test_transcribe_decodes_the_whole_window_by_default(tmp_path, tiny_model):
    """A 28 s window of Marathi needed up to 328 tokens; validation's 128-token cap, once transcribe's default, cut it off."""
    import soundfile as sf
    from transformers import WhisperTokenizer

    from tests.conftest import tone

    sf.write(tmp_path / "c0.wav", tone(1.5, 16000), 16000)
    run(["transcribe", "c0.wav", "--base", tiny_model, "--language", "mr", "--num_workers", "0"], tmp_path)
    (row,) = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    # The random model never ends its transcript, so its length is the budget: 448 positions less the 4-token prompt.
    tokens = len(WhisperTokenizer.from_pretrained(tiny_model)(row["text"], add_special_tokens=False).input_ids)
    assert 440 <= tokens <= 445, tokens


def test_transcribe_a_long_file_in_another_language_with_timestamps_and_subtitles(tmp_path, demo_adapter):
    import soundfile as sf

    from tests.conftest import tone

    # 14 s: four of the demo model's 4 s windows; too long for one, so it used to be skipped as too_long.
    sf.write(tmp_path / "talk.wav", np.concatenate([tone(3.5, 16000, seed=i) for i in range(4)]), 16000)
    # Asked in another language than the adapter's: transcribed as asked, with a warning.
    plain = run(
        [
            "transcribe",
            "talk.wav",
            "--adapter",
            str(demo_adapter),
            "--num_workers",
            "0",
            "--max_new_tokens",
            "6",
            "--output",
            "plain",
            "--language",
            "English",
        ],
        tmp_path,
    )
    assert "wrote 1 transcript(s)" in plain.stdout
    assert "the adapter was trained for Marathi; transcribing as English" in plain.stderr + plain.stdout
    assert "too_long" not in plain.stderr + plain.stdout  # transcribed window by window, not "skipped"
    run(
        [
            "transcribe",
            "talk.wav",
            "--adapter",
            str(demo_adapter),
            "--num_workers",
            "0",
            "--max_new_tokens",
            "6",
            "--timestamps",
            "true",
            "--subtitles",
            "subs",
        ],
        tmp_path,
    )
    (row,) = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    assert row["path"] == "talk.wav" and row["duration"] == 14.0 and "error" not in row
    segments = row["segments"]
    assert segments and all(0 <= s["start"] < s["end"] <= 14.0 for s in segments)
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments) and segments[-1][
        "end"
    ] > 10.0  # in the last window
    assert row["text"] == " ".join(s["text"] for s in segments)
    srt, vtt = (tmp_path / "subs/0000_talk.srt").read_text(), (tmp_path / "subs/0000_talk.vtt").read_text()
    assert srt.startswith("1\n00:00:") and srt.count(" --> ") == len(segments)
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(segments)
