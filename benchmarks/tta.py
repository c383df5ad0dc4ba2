"""Time to the guide's accuracy: how long each config trains until its WER first reaches what the guide's recipe
reaches after its schedule, the way MLPerf Training measures (time to a fixed quality target).

    python -m benchmarks.tta --jobs 12            # GPU: every run of RUNS on both tasks, seeds 7 8 9
    python -m benchmarks.tta --tiny               # the code path on CPU, tiny random model (a test runs it)

For each task (``quality.TASKS``: synthetic Marathi, real recorded English digits) and seed:

1. ``recipe-config`` (the recipe config on an unquantized base, which trains as the guide's int8 one does at these
   settings: benchmarks/README.md) trains the guide's schedule, 3 epochs at batch 8, on the train split. Its dev WER
   after the last step, averaged over seeds, plus the project's 0.5-point bound, is the **target**.
2. Every run trains on the same split with its own schedule (``RUNS``: a config, its lever, a budget in epochs) and
   validates on the dev split every ``--val-share`` of an epoch of windows (the same for every run);
   ``benchmarks/trajectory.py`` records optimizer steps, windows, clips and training seconds at each validation.
   A run reaches the target at its first validation at or under it; the recipe at the end of its schedule at the
   latest (the target was set there).
3. The adapter kept at that validation is scored on the test split (``quality.evaluate``): test WER over seeds and
   its paired bootstrap difference to the recipe's, over the same clips.
4. The headline projects the time to target onto whisper-large-v2: windows to target × seconds per window of the
   run's config in a speed report (``--speed``), against that same report's recipe row (the guide's recipe, HF
   Seq2SeqTrainer, in the same process). The whisper-base seconds measured here, ``--jobs`` runs sharing one GPU,
   are its check.

Every run validates with ``generate()`` and runs its layers eagerly (many processes compiling at once cost more
than they train; compiled layers learn the same up to rounding).
"""

import argparse
import datetime
import json
import math
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import commit, lightning_asr, machine, quality
from benchmarks.quality import REPO, TASKS, config_file, train_once
from lightning_asr.model.metrics import paired_bootstrap

RESULTS = REPO / "benchmarks/results"
BOUND = 0.005  # the project's WER bound: half a point


def lever(lr: float, share: float = 0.1, *more: str) -> tuple[str, ...]:
    """A schedule in data: the peak learning rate, the warm-up as a share of the run, and other knobs."""
    return (f"--model.learning_rate={lr}", "--model.warmup_steps=null", f"--model.warmup_share={share}", *more)


@dataclass(frozen=True)
class Run:
    """One run's recipe: a config over the recipe config, its knobs, its budget and what times it."""

    config: str | None  # configs/NAME.yaml (or benchmarks/configs/) over the recipe config; None: the recipe alone
    epochs: dict[str, int] = field(default_factory=lambda: {"cv-synth-mr": 4, "fsdd-en": 1})
    args: tuple[str, ...] = ()  # more `lightning-asr fit` arguments: the lever
    speed: str | None = None  # the config whose speed-report row times this run (default: config)


GUIDE = {"cv-synth-mr": 3, "fsdd-en": 3}  # the guide's schedule: 3 epochs
RUNS = {
    "recipe-config": Run(None, GUIDE, ("--model.quantization=none",), speed="recipe"),
    # The schedule shipped before issue 45: the recipe's lr 1e-3 and 50 warm-up steps. Each lever below sets its own;
    # the configs now ship the -lr2e-3 schedule (packed-dense-bf16), -lr1e-3 (lean, nf4) and -lr2e-3 (offload).
    "packed-dense-bf16": Run(
        "packed-dense-bf16", args=("--model.learning_rate=1e-3", "--model.warmup_steps=50", "--model.warmup_share=null")
    ),
    "packed-dense-bf16-lr2e-3": Run("packed-dense-bf16", args=lever(2e-3)),  # the square root of the batch's growth
    "packed-dense-bf16-lr4e-3": Run("packed-dense-bf16", args=lever(4e-3)),  # linear in the batch's growth
    "packed-dense-bf16-loraplus": Run("packed-dense-bf16", args=lever(1e-3, 0.1, "--model.lora.loraplus_ratio=16")),
    "packed-dense-bf16-rslora": Run("packed-dense-bf16", args=lever(1e-3, 0.1, "--model.lora.rslora=true")),
    "packed-dense-bf16-r8": Run(
        "packed-dense-bf16", args=lever(2e-3, 0.1, "--model.lora.r=8", "--model.lora.alpha=16")
    ),
    "packed-dense-lean-bf16-lr1e-3": Run("packed-dense-lean-bf16", args=lever(1e-3)),
    "packed-dense-offload-bf16-lr2e-3": Run("packed-dense-offload-bf16", args=lever(2e-3)),
    "packed-dense-nf4-offload-compile-b10-lr1e-3": Run("packed-dense-nf4-offload-compile-b10", args=lever(1e-3)),
}
SPEED = [RESULTS / "speed-compile-guards-h100.json", RESULTS / "speed-offload-3.json"]


def batch_size(run: Run) -> int:
    given = [a.split("=", 1)[1] for a in run.args if a.startswith("--data.batch_size=")]
    return int(given[-1]) if given else quality.batch_size(run.config or "recipe-config")


def schedule(train_rows: int, epochs: int, batch: int, val_windows: float) -> tuple[int, int]:
    """(optimizer steps, steps between validations): ``epochs`` of ``train_rows`` windows, validated about every
    ``val_windows`` windows and at the last step. The interval divides the run's steps where one within 30 % of the
    wanted interval does; otherwise the run is lengthened to the next multiple of it (under one interval)."""
    steps = epochs * math.ceil(train_rows / batch)
    wanted = max(1.0, val_windows / batch)
    exact = [v for v in range(1, steps + 1) if steps % v == 0 and abs(v - wanted) <= 0.3 * wanted]
    every = min(exact, key=lambda v: (abs(v - wanted), -v)) if exact else max(1, round(wanted))
    return every * math.ceil(steps / every), every


def fit_args(args: argparse.Namespace, task: str, name: str, seed: int, out: Path, train_rows: int) -> list[str]:
    run = RUNS[name]
    data, locale, language, _ = TASKS[task]
    batch = batch_size(run)
    steps, every = schedule(train_rows, run.epochs[task], batch, args.val_share * train_rows)
    configs = [
        "--config",
        str(REPO / quality.RECIPE),
        *(["--config", str(config_file(run.config))] if run.config else []),
    ]
    command = [
        *lightning_asr(),
        "fit",
        *configs,
        f"--model.model={args.model}",
        f"--model.language={language}",
        f"--data.path={data}",
        f"--data.locale={locale}",
        "--data.train_split=train",
        "--data.val_split=dev",
        f"--trainer.max_steps={steps}",
        "--trainer.max_epochs=-1",
        f"--trainer.val_check_interval={every}",
        "--trainer.check_val_every_n_epoch=null",
        f"--seed_everything={seed}",
        "--model.validate_before_training=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--adapter_checkpoint.dirpath={out}/adapters",
        "--adapter_checkpoint.monitor=val/wer_norm",
        "--adapter_checkpoint.save_top_k=1000",  # every validated adapter: the one at the target is scored later
        "--trainer.callbacks+=benchmarks.trajectory.Trajectory",
        f"--trainer.callbacks.path={out}/trajectory.jsonl",
        "--model.decoding.method=generate",
        "--model.decoding.merge_lora=false",
        "--model.speed.compile=false",
        f"--data.eval_batch_size={args.eval_batch_size}",
        f"--data.num_workers={args.workers}",
        f"--data.cache_dir={Path(args.work) / 'cache' / task}",
        *run.args,
    ]
    if args.tiny:
        command += [
            "--trainer.accelerator=cpu",
            "--trainer.precision=32-true",
            "--model.from_config=true",
            "--model.dtype=float32",
            "--model.quantization=none",
            "--data.max_samples=8",
            "--model.decoding.max_new_tokens=8",
            "--data.num_workers=0",
        ]
    return command


def trajectory(out: Path) -> list[dict]:
    path = out / "trajectory.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def first_at(rows: list[dict], target: float, recipe: bool) -> dict | None:
    """The first validation at or under ``target``; the recipe's last if none (its schedule's end set the target)."""
    hit = next((row for row in rows if row["val"]["wer_norm"] <= target), None)
    return hit or (rows[-1] if recipe and rows else None)


def speed_rows(paths: list[Path]) -> dict[str, dict]:
    """Per config, seconds per window on whisper-large-v2 and the recipe's in the same process (first report wins)."""
    rows: dict[str, dict] = {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        recipe = report["train"]["recipe"]["samples_per_s"]
        for key, row in report["train"].items():
            name = "recipe" if key == "recipe" else row.get("config")
            if name and name not in rows:
                rows[name] = {
                    "s_per_window": row.get("clips_per_window", 1.0) / row["samples_per_s"],
                    "recipe_s_per_window": 1.0 / recipe,
                    "report": Path(path).name,
                    "machine": report["machine"],
                    "commit": report["commit"],
                }
    return rows


def score(args: argparse.Namespace, task: str, adapter: Path) -> dict:
    """The test split's scores of one adapter, cached beside it; scored in a process of its own (jobs score at once)."""
    cached = adapter / "test-scores.json"
    if not cached.is_file():
        command = [
            sys.executable,
            "-m",
            "benchmarks.tta",
            "--score",
            str(adapter),
            "--tasks",
            task,
            "--model",
            args.model,
            *(["--tiny"] if args.tiny else []),
            *(["--data-dir", args.data_dir] if args.data_dir else []),
        ]
        train_once(command, adapter / "score", adapter)
    return json.loads(cached.read_text())


def run_all(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    rows = {task: quality.train_rows(task, args) for task in args.tasks}
    # The recipe first (every other run's target waits on its seeds), then the runs task by task: a session that ends
    # early has finished one task's runs, not half of each.
    keys = list(
        dict.fromkeys(
            [(task, "recipe-config", seed) for task in args.tasks for seed in args.seeds]
            + [(task, name, seed) for task in args.tasks for name in args.runs for seed in args.seeds]
        )
    )
    targets: dict[str, float] = {}
    results: dict[tuple, dict | None] = {}

    def train(key: tuple[str, str, int]) -> dict | None:
        task, name, seed = key
        out = work / task / name / f"seed{seed}"
        try:
            if not args.collect:
                train_once(fit_args(args, task, name, seed, out, rows[task]), out, out / "adapters/last")
        except RuntimeError as error:  # one failed run is reported; the others go on
            print(error, file=sys.stderr)
        if not (out / "fit.json").is_file():
            return None
        return {"train": json.loads((out / "fit.json").read_text()), "trajectory": trajectory(out), "hit": None}

    def test(key: tuple[str, str, int]) -> None:
        result, (task, name, seed) = results[key], key
        result["hit"] = hit = first_at(result["trajectory"], targets[task], name == "recipe-config")
        adapter = work / task / name / f"seed{seed}" / f"adapters/step-{hit['step']}" if hit else None
        if adapter and (not args.collect or (adapter / "test-scores.json").is_file()):
            try:
                result["test"] = score(args, task, adapter)
            except RuntimeError as error:
                print(error, file=sys.stderr)

    # Runs train --jobs at a time; each task's adapters are scored (a few at a time, beside the training) as soon as
    # its target is known, which is when the last of its recipe runs ends.
    with ThreadPoolExecutor(args.jobs) as pool, ThreadPoolExecutor(max(1, args.jobs // 4)) as scorers:
        futures = {pool.submit(train, key): key for key in keys}
        scored = []
        for future in as_completed(futures):
            key = futures[future]
            results[key] = future.result()
            task = key[0]
            recipe = [k for k in keys if k[:2] == (task, "recipe-config")]
            if task not in targets and all(k in results for k in recipe):
                finals = [
                    results[k]["trajectory"][-1]["val"]["wer_norm"]
                    for k in recipe
                    if results[k] and results[k]["trajectory"]
                ]
                if not finals:
                    continue
                targets[task] = statistics.mean(finals) + BOUND
                scored += [scorers.submit(test, k) for k in results if k[0] == task and results[k]]
            elif task in targets and results[key]:
                scored.append(scorers.submit(test, key))
        for future in scored:
            future.result()
    return report_of(args, keys, results, targets, rows)


def report_of(
    args: argparse.Namespace, keys: list[tuple], results: dict, targets: dict[str, float], rows: dict[str, int]
) -> dict:
    """The report: the machine and command, and per task its target, runs and summary."""
    report = {
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "command": "python -m benchmarks.tta " + " ".join(sys.argv[1:]),
        "seeds": args.seeds,
        "jobs": args.jobs,
        "val_share": args.val_share,
        "speed": speed_rows(args.speed),
        "tasks": {},
    }
    for task in args.tasks:
        runs = {
            name: {str(s): results[(t, n, s)] for t, n, s in keys if (t, n) == (task, name) and results[(t, n, s)]}
            for name in dict.fromkeys(n for _, n, _ in keys)
        }
        runs = {name: seeds for name, seeds in runs.items() if seeds}  # a run none of whose seeds finished: not_run
        report["tasks"][task] = {
            "target": targets.get(task),
            "train_rows": rows[task],
            "runs": runs,
            "summary": summarise(runs, report["speed"]) if task in targets else {},
        }
    report["not_run"] = [list(k) for k, v in results.items() if v is None]
    return report


def summarise(runs: dict[str, dict], speed: dict[str, dict]) -> dict[str, dict]:
    """Per run: how many seeds reached the target, the training they took to reach it, its time projected onto
    large-v2 and measured here, both as ratios to the recipe's, and the test WER there against the recipe's."""
    recipe = runs.get("recipe-config", {})
    base = reach(recipe)
    out = {}
    for name, seeds in runs.items():
        row = reach(seeds)
        row["best_dev"] = statistics.mean(min(r["val"]["wer_norm"] for r in s["trajectory"]) for s in seeds.values())
        timing = speed.get(RUNS[name].speed or RUNS[name].config or "")
        if timing and row["all"] and base["all"]:
            row["projected_s"] = row["windows"] * timing["s_per_window"]
            row["projected_vs_recipe"] = base["windows"] * timing["recipe_s_per_window"] / row["projected_s"]
            row["speed_report"] = timing["report"]
        if row["all"] and base["all"]:
            row["measured_vs_recipe"] = base["train_s"] / row["train_s"]
        tested = [s["test"] for s in seeds.values() if "test" in s]
        if tested:
            row["test_wer"] = [t["wer_norm"] for t in tested]
            row["test_mean"] = statistics.mean(row["test_wer"])
            row["test_sd"] = statistics.stdev(row["test_wer"]) if len(tested) > 1 else 0.0
        baseline = [s["test"] for s in recipe.values() if "test" in s]
        if tested and baseline and name != "recipe-config":
            diff, low, high = paired_bootstrap(
                [t["clip_errors"] for t in tested], [t["clip_errors"] for t in baseline], baseline[0]["clip_words"]
            )
            row |= {
                "test_diff": diff,
                "test_diff_ci95": [low, high],
                "within_bound": row["test_mean"] <= statistics.mean(t["wer_norm"] for t in baseline) + BOUND,
            }
        out[name] = row
    return out


def reach(seeds: dict[str, dict]) -> dict:
    """The seeds that reached the target, and the means of their steps, windows, clips and seconds to it."""
    hits = [s["hit"] for s in seeds.values() if s.get("hit")]
    row = {"seeds": len(seeds), "reached": len(hits), "all": bool(seeds) and len(hits) == len(seeds)}
    for key in ("step", "windows", "clips", "train_s"):
        row[key] = statistics.mean(h[key] for h in hits) if hits else None
    return row


HEADER = (
    "| run | reached | steps | windows | clips | × recipe, large-v2 | × recipe, measured | test WER % | "
    "− recipe [95 % CI] | within bound | best dev WER % |"
)


def markdown(report: dict) -> str:
    speed = report["speed"]
    used = sorted({(v["report"], v["machine"], v["commit"]) for v in speed.values()})
    lines = [
        f"# Time to the guide's accuracy, seeds {report['seeds']}",
        "",
        (
            f"Machine: {report['machine']}; commit {report['commit']}; {report['jobs']} runs at a time. "
            f"Command: `{report['command']}`."
        ),
        "",
        "Target: `recipe-config`'s dev WER after the guide's schedule (3 epochs, batch 8), mean over seeds, plus "
        "0.5 points. A run reaches it at its first validation at or under it (validations every "
        f"{report['val_share']:g} of an epoch of windows). Windows: rows trained on (a packed window is one); clips: "
        "every clip in them. **× recipe, large-v2** (the headline): windows to target × seconds per window of the "
        "run's config on whisper-large-v2, against the recipe's windows × the guide's recipe's seconds per window "
        "in the same speed report (" + "; ".join(f"`{r}`: {m}, commit {c}" for r, m, c in used) + "). "
        "× recipe, measured: whisper-base training seconds here (validation excluded), runs sharing the GPU. "
        "Test: normalised WER of the adapter at the target on the test split; difference to the recipe's paired "
        "over the same clips, 95 % bootstrap interval; within bound: mean within 0.5 points of the recipe's.",
    ]
    for task, result in report["tasks"].items():
        target = result["target"]
        lines += [
            "",
            f"## {task} ({result['train_rows']} training clips; target {100 * target:.1f} % dev WER)"
            if target is not None
            else f"## {task}: no target (the recipe's runs did not finish)",
            "",
        ]
        lines += [HEADER, "|---" * HEADER.count(" | ") + "|---|"]
        for name, row in result["summary"].items():
            lines.append(
                " | ".join(
                    [
                        f"| `{name}`",
                        f"{row['reached']}/{row['seeds']}",
                        *(fmt(row[k], ",.0f") for k in ("step", "windows", "clips")),
                        fmt(row.get("projected_vs_recipe"), ".1f", "×"),
                        fmt(row.get("measured_vs_recipe"), ".1f", "×"),
                        (
                            f"{100 * row['test_mean']:.1f} ± {100 * row['test_sd']:.1f}"
                            + (f" ({len(row['test_wer'])} scored)" if len(row["test_wer"]) < row["reached"] else "")
                            if "test_mean" in row
                            else "–"
                        ),
                        (
                            f"{100 * row['test_diff']:+.1f} [{100 * row['test_diff_ci95'][0]:+.1f}, {100 * row['test_diff_ci95'][1]:+.1f}]"
                            if "test_diff" in row
                            else "–"
                        ),
                        ("yes" if row["within_bound"] else "**no**") if "within_bound" in row else "–",
                        f"{100 * row['best_dev']:.1f} |",
                    ]
                )
            )
    lines += [
        "",
        "Runs (`benchmarks/tta.py`, `RUNS`): "
        + "; ".join(
            f"`{n}`: {RUNS[n].config or 'the recipe config'} {' '.join(RUNS[n].args)}, epochs {RUNS[n].epochs}"
            for n in dict.fromkeys(n for t in report["tasks"].values() for n in t["runs"])
        ),
    ]
    if report["not_run"]:
        lines += ["", "Not run or failed: " + ", ".join(f"{t}/{n} seed {s}" for t, n, s in report["not_run"]) + "."]
    return "\n".join(lines) + "\n"


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def score_adapter(args: argparse.Namespace) -> None:
    """``--score ADAPTER``: its test-split scores into ADAPTER/test-scores.json (run_all's scoring processes)."""
    data, locale, language, _ = TASKS[args.tasks[0]]
    result = quality.evaluate(
        args.model,
        str(data),
        locale,
        language,
        adapter=args.score,
        from_config=args.tiny,
        limit=4 if args.tiny else None,
    )
    (Path(args.score) / "test-scores.json").write_text(json.dumps(result, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(quality.SHARED / "models/whisper-base"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="beside recipe-config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--jobs", type=int, default=1, help="training processes at once")
    parser.add_argument(
        "--val-share", type=float, default=0.25, help="validate every this share of an epoch of windows"
    )
    parser.add_argument("--eval-batch-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="data.num_workers of each run")
    parser.add_argument(
        "--speed",
        nargs="+",
        type=Path,
        default=SPEED,
        help="speed reports (benchmarks/speed.py) timing the configs on whisper-large-v2; a config's first report wins",
    )
    parser.add_argument("--work", default="/tmp/tta")
    parser.add_argument("--data-dir", default=None, help="folder holding cv-synth/ and real/ (default ../shared/data)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--name", default=None, help="results file stem (default tta, tta-tiny with --tiny)")
    parser.add_argument("--collect", action="store_true", help="train and score nothing: report what --work holds")
    parser.add_argument(
        "--tiny", action="store_true", help="the code path on CPU: a tiny random model, 8 clips a split"
    )
    parser.add_argument("--score", metavar="ADAPTER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir:
        quality.use_data_dir(Path(args.data_dir))
    if args.tiny:
        args.model = str(REPO / "demo/whisper-tiny-random")
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    if args.score:
        return score_adapter(args)
    quality.THREADS.update(os.environ)
    quality.THREADS.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    # The runs import the Trajectory callback from this checkout.
    quality.THREADS["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    report = run_all(args)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / (args.name or ("tta-tiny" if args.tiny else "tta"))
    stem.with_suffix(".json").write_text(json.dumps(report, ensure_ascii=False, separators=(",", ":")))
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
