import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

CLI = [sys.executable, "-m", "lightning_asr.cli"]
DEMO = str(REPO / "configs" / "demo.yaml")


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def demo_args(tmp_path: Path, *extra: str) -> list[str]:
    """The demo config, shortened, with every output under tmp_path."""
    return [
        "fit", "--config", DEMO,
        f"--model.model={REPO}/demo/whisper-tiny-random", f"--data.path={REPO}/demo/common_voice",
        f"--trainer.logger.init_args.save_dir={tmp_path}/runs", f"--data.cache_dir={tmp_path}/cache",
        f"--adapter_checkpoint.dirpath={tmp_path}/adapters", f"--trainer.default_root_dir={tmp_path}",
        *extra,
    ]


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_config_parses(config, tmp_path):
    out = run(["fit", "--config", str(REPO / "configs" / config), "--print_config"], tmp_path)
    assert "model:" in out.stdout and "data:" in out.stdout


def test_recipe_config_is_the_guides(tmp_path):
    import yaml

    out = yaml.safe_load(run(["fit", "--config", str(REPO / "configs/whisper-large-v2-int8-mr.yaml"), "--print_config"], tmp_path).stdout)
    model, data, trainer = out["model"], out["data"], out["trainer"]
    assert (model["model"], model["language"], model["task"], model["quantization"]) == ("openai/whisper-large-v2", "Marathi", "transcribe", "int8")
    assert (model["lora_r"], model["lora_alpha"], model["lora_dropout"], model["lora_target_modules"], model["lora_bias"]) == (32, 64, 0.05, ["q_proj", "v_proj"], "none")
    assert (model["learning_rate"], model["warmup_steps"], model["max_new_tokens"]) == (1e-3, 50, 128)
    assert (data["locale"], data["train_split"], data["val_split"], data["batch_size"]) == ("mr", "train+dev", "test", 8)
    assert (trainer["max_epochs"], trainer["precision"], trainer["check_val_every_n_epoch"]) == (3, "16-mixed", 1)
    assert "language" not in data and "model" not in data  # linked from the model: set in one place


def test_demo_fit_writes_adapter_and_tensorboard_and_reports_wer(tmp_path):
    out = run(demo_args(tmp_path, "--trainer.max_steps=6", "--trainer.val_check_interval=3", "--data.max_samples=8",
                        "--model.max_new_tokens=8", "--trainer.log_every_n_steps=2", "--throughput.window_size=2"), tmp_path)
    assert "WER:" in out.stdout and "at step 0 ->" in out.stdout
    for name in ("last", "best"):
        folder = tmp_path / "adapters" / name
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    events = list((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent), size_guidance={"scalars": 0}).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/wer", "val/wer_norm", "val/cer", "val/degenerate", "train/device/samples_per_sec", "train/device/items_per_sec"} <= tags
    assert [e.step for e in acc.Scalars("val/wer")][0] == 0  # the zero-shot point
    assert "val/examples/text_summary" in acc.Tags()["tensors"]


def test_validate_with_a_saved_adapter(tmp_path):
    run(demo_args(tmp_path, "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--data.max_samples=4",
                  "--model.max_new_tokens=4", "--model.validate_before_training=false"), tmp_path)
    out = run(["validate", "--config", DEMO, f"--model.model={REPO}/demo/whisper-tiny-random", f"--data.path={REPO}/demo/common_voice",
               f"--model.adapter={tmp_path}/adapters/last", "--data.max_samples=4", "--model.max_new_tokens=4",
               f"--trainer.logger.init_args.save_dir={tmp_path}/runs", f"--data.cache_dir={tmp_path}/cache"], tmp_path)
    assert "val/wer" in out.stdout


def trained_weights(ckpt: Path) -> dict:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return state


def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path):
    common = ["--model.validate_before_training=false", "--data.num_workers=0", "--model.lora_dropout=0.1",
              "--trainer.limit_val_batches=0", "--data.max_samples=16", "--data.batch_size=4"]
    ckpt = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.every_n_train_steps=3", "--trainer.callbacks.save_top_k=-1",
            "--trainer.callbacks.filename={step}"]
    # Uninterrupted: 6 steps (1.5 epochs of 4 batches, so the resume point is mid-epoch).
    run(demo_args(tmp_path / "a", "--trainer.max_steps=6", *common, *ckpt, f"--trainer.callbacks.dirpath={tmp_path}/a/ckpt"), tmp_path)
    # Interrupted: the same run, SIGKILLed once its step-3 checkpoint exists.
    env = os.environ | {"PYTHONPATH": str(REPO)}
    args = demo_args(tmp_path / "b", "--trainer.max_steps=200", *common, *ckpt, f"--trainer.callbacks.dirpath={tmp_path}/b/ckpt")
    proc = subprocess.Popen(CLI + args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / "b/ckpt/step=3.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "b/ckpt/step=3.ckpt").exists()
    run(demo_args(tmp_path / "b", "--trainer.max_steps=6", *common, "--ckpt_path", str(tmp_path / "b/ckpt/step=3.ckpt"),
                  *ckpt, f"--trainer.callbacks.dirpath={tmp_path}/b/resumed"), tmp_path)
    expected, got = trained_weights(tmp_path / "a/ckpt/step=6.ckpt"), trained_weights(tmp_path / "b/resumed/step=6.ckpt")
    assert expected.keys() == got.keys() and expected
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
    # Slim: the checkpoint holds the adapter, its optimizer state and a little bookkeeping, not the base.
    adapter_bytes = sum(v.numel() * v.element_size() for v in expected.values())
    assert (tmp_path / "a/ckpt/step=6.ckpt").stat().st_size < 4 * adapter_bytes + 200_000
    assert set(torch.load(tmp_path / "a/ckpt/step=6.ckpt", weights_only=False)["state_dict"]) == set(expected)
