"""DDP on CPU (gloo, 2 processes): metrics synchronise exactly and no clip is counted twice."""

import re

from tests.conftest import DEMO, REPO, run, sigterm_once_training, user_args


def validate(tmp_path, *extra: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = run(
        [
            "validate",
            "--config",
            DEMO,
            f"--model.model={REPO}/demo/whisper-tiny-random",
            f"--data.path={REPO}/demo/common_voice",
            "--data.val_split=test",
            "--data.max_samples=7",
            "--data.eval_batch_size=1",
            "--data.num_workers=0",
            "--model.decoding.max_new_tokens=6",
            f"--trainer.logger.init_args.save_dir={tmp_path}/runs",
            f"--data.cache_dir={tmp_path}/cache",
            *extra,
        ],
        tmp_path,
    )
    return {k: float(v) for k, v in re.findall(r"(val/\w+)\s*│\s*([0-9.]+)", out.stdout)}


def test_distributed_wer_equals_single_process_wer(tmp_path):
    single = validate(tmp_path / "one")
    # 7 clips over 2 ranks: a padding sampler would count one clip twice and change every metric.
    ddp = validate(tmp_path / "two", "--trainer.strategy=ddp", "--trainer.devices=2")
    assert set(single) >= {"val/wer", "val/cer", "val/wer_norm"}
    for name, value in single.items():
        assert abs(ddp[name] - value) < 1e-6, (name, ddp[name], value)


def test_ddp_trains_int8_with_reentrant_checkpointing_and_every_rank_skips_one_ranks_empty_batch(tmp_path):
    """int8 checkpoints re-enter autograd; DDP must still reduce every LoRA gradient once per step. One training
    clip is undecodable: the rank whose batch it was has nothing to train on, and if it alone skipped the step the
    other's gradient all-reduce would wait for it forever (here: until the timeout)."""
    import shutil

    from tests.conftest import demo_args

    data = shutil.copytree(REPO / "demo" / "common_voice", tmp_path / "cv")
    first = (data / "mr" / "train.tsv").read_text().splitlines()[1].split("\t")[1]
    (data / "mr" / "clips" / first).write_bytes(b"not an mp3")
    # 4 clips, batch 1, 2 ranks: 2 steps, one of which a rank spends on the broken clip.
    out = run(
        demo_args(
            tmp_path,
            f"--data.path={data}",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.max_steps=2",
            "--data.max_samples=4",
            "--data.batch_size=1",
            "--trainer.limit_val_batches=0",
            "--model.validate_before_training=false",
            "--model.speed.gradient_checkpointing=true",
            "--data.num_workers=0",
        ),
        tmp_path,
        timeout=300,
    )
    assert (tmp_path / "adapters" / "last" / "adapter_model.safetensors").is_file(), out.stdout[-2000:]
    assert first in out.stdout + out.stderr  # the broken clip was named, not silently dropped


def test_ddp_fit_validates_and_saves_adapters_in_the_runs_own_folder(tmp_path):
    """The default adapters' folder (runs/demo/version_N/adapters) comes from trainer.log_dir, a collective under DDP.
    Asked on rank 0 alone at its first save, it paired with the other rank's DDP sync and the run crashed at its first
    validation; every rank now settles it when fit starts."""
    import json

    out = run(
        user_args(
            "--model.validate_before_training=false",
            "--data.num_workers=0",
            "--data.max_samples=8",
            "--data.batch_size=1",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=1",
            "--trainer.limit_val_batches=1",
            "--data.eval_batch_size=2",
            "--model.decoding.max_new_tokens=4",
        ),
        tmp_path,
        timeout=300,
    )
    saved = json.loads((tmp_path / "runs/demo/version_0/adapters/last/lightning_asr.json").read_text())
    assert saved["global_step"] == 3 and "val/wer" in saved["metrics"], out.stdout[-2000:]


def test_sigterm_under_ddp_stops_every_rank_at_one_step_and_resumes(tmp_path):
    """kill under DDP (the launching rank gets it, as from a shell): every rank stops after the same step, last.ckpt and
    adapters/last hold it, the exit code says SIGTERM, and --ckpt_path last resumes. Lightning 2.6's own handler let
    ranks stop at different steps (one CI run hung); AdapterCheckpoint has the ranks agree at each step's end."""
    import json

    import torch

    common = user_args(
        "--model.validate_before_training=false",
        "--data.num_workers=0",
        "--data.max_samples=24",
        "--data.batch_size=1",
        "--trainer.callbacks.every_n_train_steps=1000",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.limit_val_batches=0",
    )
    run_dir = tmp_path / "runs/demo/version_0"
    code = sigterm_once_training([*common, "--trainer.max_steps=100000"], tmp_path, run_dir, tmp_path / "fit.log")
    assert code == 143, (tmp_path / "fit.log").read_text()[-3000:]
    step = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)["global_step"]
    assert step >= 10 and json.loads((run_dir / "adapters/last/lightning_asr.json").read_text())["global_step"] == step
    run([*common, f"--trainer.max_steps={step + 2}", "--ckpt_path", "last"], tmp_path, timeout=300)
    assert json.loads((run_dir / "adapters/last/lightning_asr.json").read_text())["global_step"] == step + 2
