"""Samples/s of the large-v2 architecture on 1 vs N GPUs (DDP), same per-GPU batch, our fast mode.

    python -m benchmarks.ddp --devices 1 && python -m benchmarks.ddp --devices 2 && python -m benchmarks.ddp --report

``--validate-clips N`` validates N clips instead (static decoding, LoRA merged, 96 tokens a clip):
the validation loop's seconds on 1 vs N GPUs, and the error rates, synchronised over ranks.

Each call appends one JSON line to ``--work``/runs.jsonl (rank 0 only); ``--report`` writes
``benchmarks/results/ddp.{json,md}``. Lightning's DDP re-runs this script once per extra
rank, so the model and clips are built only when absent.
"""

import argparse
import dataclasses
import datetime
import json
from pathlib import Path

import lightning as L
import torch

from benchmarks import write_json
from benchmarks.speed import (
    LARGE_V2,
    MODES,
    TINY,
    LoopTimer,
    StepTimer,
    build_model,
    lightning_parts,
    make_clips,
    peak_gib,
    quiet_trainer,
)
from lightning_asr.model.knobs import Decoding

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--mode", default="bf16-trim-gc-b64")
    parser.add_argument("--steps", type=int, default=12, help="a multiple of --warmup")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--work", default="/tmp/ddp")
    parser.add_argument("--validate-clips", type=int, help="validate this many clips instead of training")
    parser.add_argument("--eval-batch", type=int, default=128, help="per-GPU validation batch (with --validate-clips)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model on CPU (gloo): checks the script, measures nothing"
    )
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    args = parser.parse_args()
    work = Path(args.work)
    if args.report:
        return report(work, Path(args.results))
    if args.tiny:
        args.steps, args.warmup = 2, 1
    if not (work / "model" / "config.json").is_file():
        build_model(work / "model", TINY if args.tiny else LARGE_V2, "cpu" if args.tiny else "cuda")
    mode = {m.name: m for m in MODES}[args.mode]
    if args.tiny:
        mode = dataclasses.replace(
            mode, overrides={**mode.overrides, "data.batch_size": 4, "model.speed.compile": False}
        )
    steps = args.steps + args.warmup + args.profile_steps
    if not (work / "clips" / "clips.jsonl").is_file():
        make_clips(work / "clips", 2 * mode.batch_size * (steps + 1))  # two GPUs, one epoch
    if args.validate_clips:
        return validate(args, mode, work)
    # As in speed.py: windows of --warmup steps, so the timed steps average whole windows.
    module, data = lightning_parts(mode, work / "model", work / "clips" / "clips.jsonl", group_window=args.warmup)
    timer = StepTimer(args.warmup, args.steps, args.profile_steps)
    trainer = ranked_trainer(args, mode, max_steps=steps, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, data)
    if trainer.is_global_zero:
        row = timer.result()
        row = {
            "devices": args.devices,
            "mode": args.mode,
            "per_gpu_batch": mode.batch_size,
            "samples_per_s": row["samples_per_s"] * args.devices,
            "gpu": gpu_name(),
            "peak_gib_rank0": peak_gib(),
            "profile_rank0": row.get("profile"),
        }
        with open(work / "runs.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)


def ranked_trainer(args: argparse.Namespace, mode, **kwargs) -> L.Trainer:
    """speed.py's quiet Trainer on ``--devices`` GPUs (CPU processes with ``--tiny``), DDP over more than one."""
    return quiet_trainer(
        mode, "cpu" if args.tiny else "gpu", args.devices, strategy="ddp" if args.devices > 1 else "auto", **kwargs
    )


def gpu_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (tiny smoke run)"


def validate(args: argparse.Namespace, mode, work: Path) -> None:
    module, data = lightning_parts(
        mode,
        work / "model",
        work / "clips" / "clips.jsonl",
        eval_batch_size=args.eval_batch,
        decoding=Decoding("static", max_new_tokens=96, merge_lora=True),
    )
    data.hparams.max_samples = args.validate_clips
    # Warm-up (CUDA context, kernel choice) in its own trainer, as speed.py's decodes do.
    ranked_trainer(args, mode, limit_val_batches=1).validate(module, data)
    loop = LoopTimer()
    trainer = ranked_trainer(args, mode, callbacks=[loop])
    metrics = trainer.validate(module, data)[0]
    if trainer.is_global_zero:
        row = {
            "kind": "validate",
            "devices": args.devices,
            "mode": args.mode,
            "per_gpu_batch": args.eval_batch,
            "clips": args.validate_clips,
            "seconds": loop.seconds,
            "first_batch_wait_s": loop.waits[0],
            "gpu": gpu_name(),
            "peak_gib_rank0": peak_gib(),
            **{k: float(v) for k, v in metrics.items()},
        }
        with open(work / "runs.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)


def report(work: Path, results: Path) -> None:
    rows = [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines()]
    date = datetime.date.today().isoformat()
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / "ddp.json", rows)
    lines = [
        f"# DDP scaling: whisper-large-v2 architecture, {rows[0]['gpu']}, {date}",
        "",
        (
            "Command, per mode: `python -m benchmarks.ddp --mode M --devices 1; python -m benchmarks.ddp --mode M --devices 2`, "
            "then `python -m benchmarks.ddp --report`. Same per-GPU batch; samples/s over all GPUs, timed steps after warm-up. "
            "Rank 0's profile of two later steps: GPU busy = summed kernel time, nccl = all-reduce kernels."
        ),
        "",
        "| machine | mode | GPUs | samples/s | speed-up | peak GiB (rank 0) | wall ms/step | GPU busy ms | nccl ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    fits = [r for r in rows if r.get("kind") != "validate"]
    for r in fits:
        # Speed-ups only against the 1-GPU run on the same machine (rows may carry a "machine" label).
        one = next(
            (x for x in fits if x["devices"] == 1 and x["mode"] == r["mode"] and x.get("machine") == r.get("machine")),
            None,
        )
        speedup = f"{r['samples_per_s'] / one['samples_per_s']:.2f}×" if one else "–"
        p = r.get("profile_rank0") or {}
        prof = (
            f"{p['wall_ms']:.0f} | {p['gpu_busy_ms']:.0f} | {p['kinds_ms']['nccl']:.1f}"
            if "wall_ms" in p
            else "– | – | –"
        )
        lines.append(
            f"| {r.get('machine', '–')} | {r['mode']} | {r['devices']} | {r['samples_per_s']:.2f} | {speedup} | "
            f"{r['peak_gib_rank0']:.2f} | {prof} |"
        )
    checks = [r for r in rows if r.get("kind") == "validate"]
    if checks:
        lines += [
            "",
            (
                "Validation (`--validate-clips N`): static decoding, LoRA merged, 96 new tokens a clip, timed over "
                "the validation loop on rank 0; error rates synchronised over the ranks."
            ),
            "",
            "| mode | GPUs | per-GPU batch | clips | seconds | first batch wait, s | peak GiB (rank 0) | val/wer | val/cer |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in checks:
            lines.append(
                f"| {r['mode']} | {r['devices']} | {r['per_gpu_batch']} | {r['clips']} | {r['seconds']:.1f} | "
                f"{r['first_batch_wait_s']:.2f} | {r['peak_gib_rank0']:.2f} | {r['val/wer']:.4f} | {r['val/cer']:.4f} |"
            )
    (results / "ddp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
