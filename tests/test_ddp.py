"""DDP on CPU (gloo, 2 processes): metrics synchronise exactly and no clip is counted twice."""

import re

from tests.conftest import DEMO, REPO, run


def validate(tmp_path, *extra: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = run(["validate", "--config", DEMO, f"--model.model={REPO}/demo/whisper-tiny-random",
               f"--data.path={REPO}/demo/common_voice", "--data.val_split=test", "--data.max_samples=7",
               "--data.eval_batch_size=1", "--data.num_workers=0", "--model.decoding.max_new_tokens=6",
               f"--trainer.logger.init_args.save_dir={tmp_path}/runs", f"--data.cache_dir={tmp_path}/cache", *extra], tmp_path)
    return {k: float(v) for k, v in re.findall(r"(val/\w+)\s*│\s*([0-9.]+)", out.stdout)}


def test_distributed_wer_equals_single_process_wer(tmp_path):
    single = validate(tmp_path / "one")
    # 7 clips over 2 ranks: a padding sampler would count one clip twice and change every metric.
    ddp = validate(tmp_path / "two", "--trainer.strategy=ddp", "--trainer.devices=2")
    assert set(single) >= {"val/wer", "val/cer", "val/wer_norm"}
    for name, value in single.items():
        assert abs(ddp[name] - value) < 1e-6, (name, ddp[name], value)


def test_ddp_trains_int8_with_reentrant_checkpointing(tmp_path):
    """int8 checkpoints re-enter autograd; DDP must still reduce every LoRA gradient once per step."""
    from tests.conftest import demo_args

    out = run(demo_args(tmp_path, "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_steps=2",
                        "--trainer.limit_val_batches=0", "--model.validate_before_training=false",
                        "--model.speed.gradient_checkpointing=true", "--data.num_workers=0", "--data.batch_size=2"), tmp_path)
    assert (tmp_path / "adapters" / "last" / "adapter_model.safetensors").is_file(), out.stdout[-2000:]
