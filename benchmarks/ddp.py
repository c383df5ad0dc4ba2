"""Samples/s of the large-v2 architecture on 1 vs N GPUs (DDP), same per-GPU batch, our fast mode.

    python benchmarks/ddp.py --devices 1 && python benchmarks/ddp.py --devices 2 && python benchmarks/ddp.py --report

Each call appends one JSON line to ``--work``/runs.jsonl (rank 0 only); ``--report`` writes
``benchmarks/results/ddp-<date>.{json,md}``. Lightning's DDP re-runs this script once per extra
rank, so the model and clips are built only when absent.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import LARGE_V2, MODES, StepTimer, build_model, lightning_parts, make_clips  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--mode", default="bf16-trim-gc-b32")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--work", default="/tmp/ddp")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    args = parser.parse_args()
    work = Path(args.work)
    if args.report:
        return report(work, Path(args.results))
    if not (work / "model" / "config.json").is_file():
        build_model(work / "model", LARGE_V2, "cuda")
    if not (work / "clips" / "clips.jsonl").is_file():
        make_clips(work / "clips", 64 * (args.steps + args.warmup + 2))
    mode = {m.name: m for m in MODES}[args.mode]
    module, data = lightning_parts(mode, work / "model", work / "clips" / "clips.jsonl")
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(accelerator="gpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                        precision=mode.precision, max_steps=args.steps + args.warmup, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, data)
    if trainer.is_global_zero:
        row = timer.result()
        row = {"devices": args.devices, "mode": args.mode, "per_gpu_batch": mode.batch_size,
               "samples_per_s": row["samples_per_s"] * args.devices, "gpu": torch.cuda.get_device_name(),
               "peak_gib_rank0": torch.cuda.max_memory_allocated() / 2**30}
        with open(work / "runs.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)


def report(work: Path, results: Path) -> None:
    rows = [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines()]
    one = next(r for r in rows if r["devices"] == 1)
    date = datetime.date.today().isoformat()
    results.mkdir(parents=True, exist_ok=True)
    (results / f"ddp-{date}.json").write_text(json.dumps(rows, indent=2))
    lines = [f"# DDP scaling: whisper-large-v2 architecture, {one['mode']}, {one['gpu']}, {date}", "",
             "Command: `python benchmarks/ddp.py --devices 1; python benchmarks/ddp.py --devices 2; python benchmarks/ddp.py --report`",
             f"Per-GPU batch {one['per_gpu_batch']}; samples/s over all GPUs, timed steps after warm-up.", "",
             "| GPUs | samples/s | speed-up | peak GiB (rank 0) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['devices']} | {r['samples_per_s']:.2f} | {r['samples_per_s'] / one['samples_per_s']:.2f}× | {r['peak_gib_rank0']:.2f} |")
    (results / f"ddp-{date}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
