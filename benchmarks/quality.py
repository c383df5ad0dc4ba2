"""Does each shipped config train as well as the guide's recipe? Several seeds, confidence intervals.

    python -m benchmarks.quality --model ../shared/models/whisper-base --seeds 7 8 9 --jobs 6

For each task (a Common Voice-layout corpus: ``cv-synth-mr``, synthetic Marathi; ``fsdd-en``, real
recorded English digits) and seed:

1. every config in ``--configs`` is trained by ``lightning-asr fit --config configs/whisper-large-v2-int8-mr.yaml
   [--config configs/NAME.yaml]`` as shipped; only the model and data paths, the length of the run, the seed, the
   output folder and the validation schedule (off: every adapter is scored afterwards, the same way) are overridden.
   The length is equal data by default: the guide's 3 epochs for every config (``--epochs``), whatever its batch
   (a packed window holds several clips, so a packed config still sees more clips); ``--steps N`` compares at
   equal optimizer steps instead, which gives a larger batch more data;
2. the guide's recipe is trained by ``benchmarks/seed_recipe.py``;
3. every adapter is scored by one routine (:func:`evaluate`): the base unquantized (fp16 on GPU),
   the adapter by plain ``PeftModel.from_pretrained``, decoded by the package's own
   ``WhisperLoRA.transcribe`` (greedy ``generate(language, task)`` from the audio alone), the language's normaliser (Whisper's English normaliser for English), per-clip
   errors. A cv-synth-mr adapter is also scored on cv-synth/en in English: what the fine-tune costs
   the base's other languages; and every adapter on generated silence, noise and music: the share of clips it
   writes words on (``benchmarks/forgetting.py``, with the levers against both).

The report gives, per config, the mean ± sd over seeds and a paired bootstrap 95 % confidence
interval of the WER difference to the recipe over the same test clips (per-clip errors averaged
over seeds, clips resampled). A device session too short for every run: ``--collect`` reports what
is scored under ``--work`` and names the rest, ``--reuse REPORT.json`` takes an earlier report's runs.
``--tiny`` runs the whole path on CPU in a minute (a tiny random
Whisper, 8 training clips, 4 scored): the test suite does.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jiwer
import lightning as L
import torch

from benchmarks import commit, lightning_asr, machine, write_json
from benchmarks.forgetting import LEVERS, lever_table, no_speech_words, scoring_module
from lightning_asr.data import SpeechDataModule
from lightning_asr.data.sources import common_voice_index
from lightning_asr.model.knobs import Decoding
from lightning_asr.model.metrics import paired_bootstrap
from lightning_asr.text import normalize

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# name: (corpus folder, locale, language, the retained set scored beside it or None)
TASKS = {
    "cv-synth-mr": (SHARED / "data/cv-synth", "mr", "Marathi", (SHARED / "data/cv-synth", "en", "English")),
    "fsdd-en": (SHARED / "data/real/fsdd-takes5-49", "en", "English", None),
}
RECIPE = "configs/whisper-large-v2-int8-mr.yaml"
# Every shipped training config (the demo and the DDP overlay train nothing to compare): a new file is measured by default.
CONFIGS = [
    "recipe-config",
    *sorted(p.stem for p in (REPO / "configs").glob("*.yaml") if p.stem not in ("demo", "ddp", Path(RECIPE).stem)),
]
# Measured candidates that did not ship (benchmarks/configs/NAME.yaml), run when named in --configs.
CANDIDATES = sorted(p.stem for p in (REPO / "benchmarks/configs").glob("*.yaml"))
# Measurements, not shipped configs: the recipe config with one knob changed, to answer a question.
# ``recipe-unquantized``: does the unquantized (bf16) base train as well as the int8 one at the recipe's settings?
# The augmentations (off in the recipe configs), each alone, the two that helped at 300 steps, and all together, against recipe-config
# (``--baseline recipe-config``): do they help a fine-tune on a small corpus (configs/augment.yaml is all three)?
SPEC = ["--model.spec_augment.time_prob=0.05", "--model.spec_augment.feature_prob=0.05"]
SPEED = ["--data.augment.speed_factors=[0.9,1.0,1.1]"]
NOISE = ["--data.augment.noise_prob=0.5", "--data.augment.snr_min_db=10", "--data.augment.snr_max_db=30"]
# ``decoder-only``: issue 18's frozen encoder (LoRA in the decoder only) at the recipe's settings.
# ``timestamps``: half the training clips labelled with timestamp tokens (what it costs in WER;
# benchmarks/timestamps.py measures the segment times its adapters predict).
VARIANTS = {
    "recipe-unquantized": ["--model.quantization=none"],
    "spec-augment": SPEC,
    "speed-perturb": SPEED,
    "noise": NOISE,
    "speed-noise": SPEED + NOISE,
    "augment-all": SPEC + SPEED + NOISE,
    "decoder-only": ["--model.lora.encoder=false"],
    "timestamps": ["--data.timestamp_share=0.5"],
    **LEVERS,  # replay, no-speech, both: benchmarks/forgetting.py
}


def evaluate(
    model: str,
    data: str,
    locale: str,
    language: str,
    adapter: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 128,
    dtype: torch.dtype | None = None,
    merge: bool = False,
    decoding: str = "generate",
    from_config: bool = False,
) -> dict:
    """WER (orthographic and normalised) and CER of base (+ adapter) on ``locale``'s test split, with
    each clip's normalised word errors and reference words (for paired comparisons).

    The package's own ``test`` loop scores it (the decode and metrics of validation, ``predict`` and
    ``transcribe``), on an unquantized base with the adapter loaded by ``PeftModel.from_pretrained``;
    without an adapter, a fresh LoRA whose zero update leaves the base's outputs as they are.
    ``merge``: ``model.decoding.merge_lora``; ``decoding``: ``model.decoding.method``."""
    gpu = torch.cuda.is_available()
    module = scoring_module(model, language, adapter, from_config, dtype, Decoding(decoding, max_new_tokens, merge))
    dm = SpeechDataModule(
        path=data,
        locale=locale,
        model=model,
        language=language,
        eval_batch_size=batch_size,
        num_workers=4 if gpu else 0,
        max_samples=limit,
        processor=module.processor,
    )
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    metrics = trainer.test(module, dm, verbose=False)[0]
    seconds = time.perf_counter() - start
    if not module.test_transcripts:  # every clip skipped (e.g. all longer than a tiny model's window): no score
        raise RuntimeError(
            f"no clip of {data} ({locale}, test split) was decoded: every one was skipped (the log above "
            "names each and why)"
        )
    _, refs, preds = map(list, zip(*module.test_transcripts))
    code = module.language
    per_clip = [jiwer.process_words(normalize(r, code) or "∅", normalize(p, code) or "∅") for r, p in zip(refs, preds)]
    return {
        "clips": len(refs),
        **{k: metrics[f"test/{k}"] for k in ("wer", "wer_norm", "cer")},
        "clip_errors": [o.substitutions + o.deletions + o.insertions for o in per_clip],
        "clip_words": [o.hits + o.substitutions + o.deletions for o in per_clip],
        "eval_seconds": seconds,
        "examples": list(zip(refs[:3], preds[:3])),
    }


def fit_config(
    name: str, model: str, task: str, out: Path, length: dict, seed: int, tiny: bool, overrides: list[str] | None = None
) -> dict:
    """``lightning-asr fit`` with a shipped config as it is, but for paths, the run's ``length`` (``{"epochs": E}`` or
    ``{"steps": N}``), seed and validation (and ``overrides``, ``--override``'s arguments, last: they win over the
    config and the variant)."""
    data, locale, language, _ = TASKS[task]
    own = name not in VARIANTS and name != "recipe-config"
    configs = ["--config", str(REPO / RECIPE), *(["--config", str(config_file(name))] if own else [])]
    args = [
        *lightning_asr(),
        "fit",
        *configs,
        f"--model.model={model}",
        f"--model.language={language}",
        f"--data.path={data}",
        f"--data.locale={locale}",
        "--data.train_split=train",
        *trainer_length(length),
        f"--seed_everything={seed}",
        "--trainer.limit_val_batches=0",
        "--model.validate_before_training=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--adapter_checkpoint.dirpath={out}/adapters",
        *variant(name, task),
        *(overrides or []),
    ]
    if tiny:  # the code path on CPU: a random tiny base, fp32, nothing compiled
        args += [
            "--trainer.accelerator=cpu",
            "--trainer.precision=32-true",
            "--model.from_config=true",
            "--model.speed.compile=false",
            "--model.dtype=float32",
            "--data.num_workers=0",
            "--data.max_samples=8",
        ]
    return train_once(args, out, out / "adapters" / "last")


def variant(name: str, task: str) -> list[str]:
    """A variant's fit arguments (some depend on the task's paths)."""
    arguments = VARIANTS.get(name, [])
    return arguments(TASKS[task]) if callable(arguments) else arguments


def config_file(name: str) -> Path:
    """A shipped config (configs/NAME.yaml), else a measured candidate that did not ship (benchmarks/configs/)."""
    shipped = REPO / f"configs/{name}.yaml"
    return shipped if shipped.is_file() else REPO / f"benchmarks/configs/{name}.yaml"


def trainer_length(length: dict) -> list[str]:
    """The fit arguments for a run of ``{"epochs": E}`` or ``{"steps": N}``."""
    if "steps" in length:
        return [f"--trainer.max_steps={length['steps']}", "--trainer.max_epochs=-1"]
    return [f"--trainer.max_epochs={length['epochs']}", "--trainer.max_steps=-1"]


def fit_recipe(model: str, task: str, out: Path, length: dict, seed: int, tiny: bool) -> dict:
    data, locale, language, _ = TASKS[task]
    run = [f"--max-steps={length['steps']}"] if "steps" in length else [f"--epochs={length['epochs']}"]
    args = [
        sys.executable,
        "-m",
        "benchmarks.seed_recipe",
        model,
        str(Path(data) / locale),
        str(out),
        *run,
        f"--seed={seed}",
        f"--language={language}",
    ] + (["--from-config", "--limit=8"] if tiny else [])
    return train_once(args, out, out / "adapter")


def train_once(args: list[str], out: Path, adapter: Path) -> dict:
    """Run one training command into ``out``, once: a finished run (``out/fit.json``) is reused, so
    an interrupted benchmark continues where it stopped."""
    done = out / "fit.json"
    if done.is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "fit.log", "w") as f:
        if subprocess.run(args, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=THREADS).returncode:
            raise RuntimeError(f"{' '.join(args[:4])} … failed: see {out / 'fit.log'}")
    result = {"wall_seconds": time.perf_counter() - start, "adapter": str(adapter)}
    done.write_text(json.dumps(result))
    return result


# Set in main: each training process's share of the CPU threads. Left alone, every process starts a
# thread per core, and six runs on a 16-core GPU host spent their time in contention (load 55).
THREADS: dict[str, str] = dict(os.environ)


def scores(args: argparse.Namespace, task: str, adapter: str | None = None) -> dict:
    """The base (+ ``adapter``) on its task's test split, and on the task's retained set as ``retained``."""
    data, locale, language, retained = TASKS[task]
    evaluation = {"adapter": adapter, "limit": args.limit, "from_config": args.tiny}
    result = evaluate(args.model, str(data), locale, language, **evaluation)
    if retained:
        result["retained"] = evaluate(args.model, str(retained[0]), retained[1], retained[2], **evaluation)
    result["no_speech"] = no_speech_words(args.model, language, adapter, 6 if args.tiny else 60, args.tiny)
    return result


# One scoring at a time: the job threads train in parallel processes, but scoring runs in this process, and
# two Trainers loading models in two threads at once failed ("Cannot copy out of meta tensor", H200, 8 jobs).
SCORING = threading.Lock()


def score(args: argparse.Namespace, task: str, adapter: str) -> dict:
    """One adapter's :func:`scores`, cached beside the adapter."""
    cached = Path(adapter).parent / "scores.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    with SCORING:
        result = scores(args, task, adapter)
    cached.write_text(json.dumps(result, ensure_ascii=False))
    return result


def zero_shot_scores(args: argparse.Namespace, task: str, cached: Path) -> dict:
    """The base alone on ``task``, scored once per ``--work`` folder: a ``--collect`` while runs still
    train then costs no decoding (and reports the same zero-shot as the run's own report)."""
    if cached.is_file():
        return json.loads(cached.read_text())
    with SCORING:
        result = scores(args, task)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result, ensure_ascii=False))
    return result


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    report = {
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "length": length(args),
        "seeds": args.seeds,
        "configs": args.configs,
        "baseline": args.baseline,
        "overrides": args.override,
        "tiny": args.tiny,
        "torch": torch.__version__,
        "commit": commit(),
        "tasks": {},
    }
    reused = {
        key: run
        for key, run in (reuse(args.reuse, length(args), args.override) if args.reuse else {}).items()
        if key[0] in args.tasks and key[1] in names(args)
    }
    # One queue over every task, each job training and then scoring its adapter, so that the GPU stays
    # shared by --jobs processes until the last run (scoring in the main thread left it idle for minutes).
    # Config by config (on every task): if a session ends early, the configs it finished have all their seeds.
    jobs = [
        (task, name, seed)
        for name in names(args)
        for task in args.tasks
        for seed in args.seeds
        if (task, name, seed) not in reused
    ]

    def job(key: tuple[str, str, int]) -> dict | None:
        task, name, seed = key
        out = work / task / name / f"seed{seed}"
        if args.collect:  # report what an earlier (or still running) invocation has scored
            if not (out / "fit.json").is_file():
                return None
            fit = json.loads((out / "fit.json").read_text())
            cached = Path(fit["adapter"]).parent / "scores.json"
            return json.loads(cached.read_text()) | {"train": fit} if cached.is_file() else None
        try:
            fit = (
                fit_recipe(args.model, task, out, length(args), seed, args.tiny)
                if name == "recipe"
                else fit_config(name, args.model, task, out, length(args), seed, args.tiny, args.override)
            )
            return score(args, task, fit["adapter"]) | {"train": fit}
        except RuntimeError as error:  # one failed run is reported; the others go on
            print(error, file=sys.stderr)
            failed.append((task, name, seed))
            return None

    failed: list[tuple[str, str, int]] = []
    # Each task's zero-shot is scored while the first runs train, not after the last: a --collect while runs
    # still train then finds it cached (on the H200 a collect decoding it was killed by its 80 s time box).
    with ThreadPoolExecutor(1) as early, ThreadPoolExecutor(args.jobs) as pool:
        if not args.collect:
            for task in args.tasks:
                early.submit(zero_shot_scores, args, task, work / task / "zero-shot.json")
        finished = dict(zip(jobs, pool.map(job, jobs))) | reused
    for task in args.tasks:
        zero_shot = zero_shot_scores(args, task, work / task / "zero-shot.json")
        result = {"zero_shot": zero_shot, "runs": {}, "train_rows": train_rows(task, args)}
        if "retained" in zero_shot:
            result["retained_zero_shot"] = zero_shot.pop("retained")
        for (t, name, seed), entry in sorted(finished.items(), key=lambda kv: jobs_order(kv[0], args)):
            if t == task and entry is not None:
                result["runs"].setdefault(name, {})[str(seed)] = entry
        summary = summarise(result["runs"], args.baseline) if args.baseline in result["runs"] else {}
        report["tasks"][task] = result | {"summary": summary}
    report["failed"] = sorted(failed)
    report["not_run"] = [key for key, entry in finished.items() if entry is None and key not in failed]
    report["reused"], report["reused_runs"] = args.reuse, sorted({f"{t}/{n}" for t, n, _ in reused})
    return report


def train_rows(task: str, args: argparse.Namespace) -> int:
    """The task's training clips (what an epoch holds), as the runs read them (``--tiny``: 8)."""
    data, locale, _, _ = TASKS[task]
    rows = len(common_voice_index(str(data), locale, "train")[0])
    return min(rows, 8) if args.tiny else rows


def names(args: argparse.Namespace) -> list[str]:
    """The runs, baseline first: the guide's recipe (seed_recipe.py) unless another baseline is named."""
    return [args.baseline, *(c for c in args.configs if c != args.baseline)]


def jobs_order(key: tuple[str, str, int], args: argparse.Namespace) -> tuple[int, int]:
    order = names(args)
    return (order.index(key[1]) if key[1] in order else len(order), key[2])


def length(args: argparse.Namespace) -> dict:
    """How long every run trains: ``--steps`` optimizer steps where given, else ``--epochs`` (equal data)."""
    return {"steps": args.steps} if args.steps else {"epochs": args.epochs}


def describe(length: dict) -> str:
    return f"{length['steps']} steps" if "steps" in length else f"{length['epochs']} epochs"


def reuse(path: str, length: dict, overrides: list[str]) -> dict:
    """Runs of an earlier report (same length and overrides, same scoring routine), taken as they are instead
    of training them again: a device session too short for every run can build on the last one."""
    earlier = json.loads(Path(path).read_text())
    before = earlier.get("length") or {"steps": earlier["steps"]}  # reports before equal-data runs counted steps
    if before != length:
        raise SystemExit(f"--reuse {path}: its runs trained {describe(before)}, not {describe(length)}")
    if earlier.get("overrides", []) != overrides:
        raise SystemExit(
            f"--reuse {path}: its runs trained with --override {earlier.get('overrides', [])}, not {overrides}"
        )
    return {
        (task, name, int(seed)): scores
        for task, result in earlier["tasks"].items()
        for name, seeds in result["runs"].items()
        for seed, scores in seeds.items()
    }


def summarise(runs: dict, baseline: str = "recipe") -> dict:
    """Per config: WER mean ± sd over seeds, and the paired difference to the baseline with its interval."""
    recipe = list(runs[baseline].values())
    words = recipe[0]["clip_words"]
    out = {}
    for name, seeds in runs.items():
        wers = [s["wer_norm"] for s in seeds.values()]
        row = {
            "wer_norm_mean": statistics.mean(wers),
            "wer_norm_sd": statistics.stdev(wers) if len(wers) > 1 else 0.0,
            "wer_norm_seeds": wers,
        }
        if name != baseline:
            diff, low, high = paired_bootstrap(
                [s["clip_errors"] for s in seeds.values()], [s["clip_errors"] for s in recipe], words
            )
            row |= {
                "diff": diff,
                "diff_ci95": [low, high],
                "within_bound": row["wer_norm_mean"] <= statistics.mean([s["wer_norm"] for s in recipe]) + 0.005,
            }
        retained = [s["retained"]["wer_norm"] for s in seeds.values() if "retained" in s]
        if retained:
            row["retained_wer_norm_mean"] = statistics.mean(retained)
        out[name] = row
    return out


def markdown(report: dict, command: str) -> str:
    baseline = report.get("baseline", "recipe")
    against = "the guide's recipe" if baseline == "recipe" else f"`{baseline}`"
    overrides = f", every run with `{' '.join(report['overrides'])}`" if report.get("overrides") else ""
    lines = [
        f"# Quality: {', '.join(report['configs'])} against {against}, {describe(report['length'])}{overrides}, seeds {report['seeds']}",
        "",
        f"Machine: {report['machine']}; commit {report['commit']}; torch {report['torch']}. Command: `{command}`.",
        "",
        "Normalised WER on each task's test split, every adapter scored by the same routine "
        f"(`benchmarks/quality.py`, `evaluate`). Difference: run minus {against}, paired over the same clips, "
        "95 % bootstrap interval. Bound: mean within 0.5 points of the baseline's mean. Windows seen: steps × batch, or epochs × training clips "
        "(a packed window, data.pack_share, holds several clips).",
    ]
    for task, result in report["tasks"].items():
        zero = result["zero_shot"]
        lines += ["", f"## {task} ({zero['clips']} test clips; zero-shot {100 * zero['wer_norm']:.1f} %)", ""]
        header = f"| run | windows seen | WER % per seed | mean ± sd | − {baseline}, points [95 % CI] | within bound |"
        retained = "retained_zero_shot" in result
        if retained:
            header += f" retained cv-synth/en WER (zero-shot {100 * result['retained_zero_shot']['wer_norm']:.1f} %) |"
        lines += [header, "|---" * (header.count("|") - 1) + "|"]
        for name, row in result["summary"].items():
            seeds = " · ".join(f"{100 * w:.1f}" for w in row["wer_norm_seeds"])
            diff = (
                "–"
                if name == baseline
                else (f"{100 * row['diff']:+.1f} [{100 * row['diff_ci95'][0]:+.1f}, {100 * row['diff_ci95'][1]:+.1f}]")
            )
            bound = "–" if name == baseline else ("yes" if row["within_bound"] else "**no**")
            title = "the guide's recipe (seed_recipe.py)" if name == "recipe" else f"`{name}`"
            seen = (
                report["length"]["steps"] * batch_size(name)
                if "steps" in report["length"]
                else report["length"]["epochs"] * result.get("train_rows", 0)
            )
            line = f"| {title} | {seen:,} | {seeds} | {100 * row['wer_norm_mean']:.1f} ± {100 * row['wer_norm_sd']:.1f} | {diff} | {bound} |"
            if retained:
                line += f" {100 * row.get('retained_wer_norm_mean', float('nan')):.1f} |"
            lines.append(line)
        if baseline in result["runs"]:
            lines += lever_table(result, baseline)
    return "\n".join(lines + footnotes(report)) + "\n"


def footnotes(report: dict) -> list[str]:
    """What a report's tables leave out: runs not run, failed, or taken from an earlier report."""
    lines = []
    if report.get("not_run"):
        runs = ", ".join(f"{t}/{n} seed {s}" for t, n, s in report["not_run"])
        lines += ["", f"Not run (the device session ended first): {runs}."]
    if report.get("failed"):
        runs = ", ".join(f"{t}/{n} seed {s}" for t, n, s in report["failed"])
        lines += ["", f"Failed (see each run's fit.log): {runs}."]
    if report.get("reused"):
        runs = ", ".join(report["reused_runs"])
        lines += ["", f"Runs taken from `{report['reused']}` (same length, same scoring): {runs}."]
    return lines


def batch_size(name: str) -> int:
    """The training batch a run used: the shipped config's, over the recipe's (the recipe's own is 8)."""
    import yaml

    size = 8
    for path in [REPO / RECIPE] + ([config_file(name)] if config_file(name).is_file() else []):
        size = (yaml.safe_load(path.read_text()).get("data") or {}).get("batch_size", size)
    return size


# What each check compares: (row title, evaluate() arguments); the first row is the default.
CHECKS = {
    "merge": (
        "Merged bf16 evaluation",
        [("LoRA branch (default)", {}), ("merged (model.decoding.merge_lora)", {"merge": True})],
    ),
    "decoding": (
        "Static decoding in bf16",
        [("generate() (default)", {}), ("static (model.decoding.method: static)", {"decoding": "static"})],
    ),
}


def decode_check(kind: str, model: str, data: str, adapter: str, limit: int | None, results: Path) -> None:
    """Does a decoding option change WER? bf16, same adapter, same clips, with and without it."""
    title, variants = CHECKS[kind]
    runs = {
        name: evaluate(model, data, "mr", "Marathi", adapter=adapter, limit=limit, dtype=torch.bfloat16, **kwargs)
        for name, kwargs in variants
    }
    report = {
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "adapter": adapter,
        "torch": torch.__version__,
        "runs": runs,
    }
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"quality-{kind}"
    write_json(stem.with_suffix(".json"), report)
    clips = next(iter(runs.values()))["clips"]
    lines = [
        f"# {title}: whisper-base + one adapter on cv-synth/mr test ({clips} clips)",
        "",
        f"Machine: {report['machine']}; torch {report['torch']}. Command: `python -m benchmarks.quality --{kind}-check ADAPTER`.",
        "",
        "| decoding (bf16 base) | WER | WER (normalised) | CER | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, m in runs.items():
        lines.append(
            f"| {name} | {100 * m['wer']:.2f} % | {100 * m['wer_norm']:.2f} % | {100 * m['cer']:.2f} % | {m['eval_seconds']:.0f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def use_data_dir(data: Path) -> None:
    """Point every task at ``data`` (a folder holding cv-synth/ and real/, as the GPU machine's copy does)."""
    for name, (corpus, *rest) in TASKS.items():
        retained = rest[2] and (data / rest[2][0].relative_to(SHARED / "data"), *rest[2][1:])
        TASKS[name] = (data / corpus.relative_to(SHARED / "data"), rest[0], rest[1], retained)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(SHARED / "models/whisper-base"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--configs",
        nargs="+",
        default=CONFIGS,
        choices=["recipe", *CONFIGS, *CANDIDATES, *VARIANTS],
        help="runs beside the baseline (`recipe`: the guide's, seed_recipe.py)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="every run's length: the guide's 3 epochs (equal data)")
    parser.add_argument(
        "--steps", type=int, default=None, help="every run's length in optimizer steps instead (equal steps)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument(
        "--baseline",
        default="recipe",
        choices=["recipe", *CONFIGS, *CANDIDATES, *VARIANTS],
        help="the run every other is compared with (default: the guide's recipe, seed_recipe.py)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ARG",
        help="one more `lightning-asr fit` argument for every config run, e.g. --override=--model.quantization=none "
        "(the same question on a cheaper base); repeat for several; the guide's recipe takes none",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="training processes at once (one GPU holds several whisper-base runs)"
    )
    parser.add_argument("--work", default="/tmp/quality")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test clips (smoke runs)")
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    parser.add_argument("--name", default=None, help="results file stem (default quality)")
    parser.add_argument(
        "--tiny", action="store_true", help="the code path on CPU: tiny random model, 8 clips, 4 scored"
    )
    parser.add_argument(
        "--reuse",
        metavar="REPORT.json",
        help="take the runs of an earlier report (same length) instead of training them again",
    )
    parser.add_argument(
        "--collect", action="store_true", help="train nothing: report the runs already scored under --work"
    )
    parser.add_argument("--data-dir", default=None, help="folder holding cv-synth/ and real/ (default ../shared/data)")
    parser.add_argument(
        "--merge-check",
        metavar="ADAPTER",
        help="only compare bf16 decoding of ADAPTER with and without "
        "model.decoding.merge_lora, into quality-merge.{json,md}",
    )
    parser.add_argument(
        "--decoding-check",
        metavar="ADAPTER",
        help="only compare bf16 decoding of ADAPTER by generate() "
        "and by model.decoding.method: static, into quality-decoding.{json,md}",
    )
    args = parser.parse_args()
    data = Path(args.data_dir) if args.data_dir else SHARED / "data"
    if args.merge_check or args.decoding_check:
        kind = "merge" if args.merge_check else "decoding"
        return decode_check(
            kind,
            args.model,
            str(data / "cv-synth"),
            args.merge_check or args.decoding_check,
            args.limit,
            Path(args.results),
        )
    if args.data_dir:
        use_data_dir(data)
    if args.override and "recipe" in names(args):
        parser.error(
            "--override changes the configs' runs, not the guide's recipe (seed_recipe.py): name another --baseline "
            "and leave recipe out of --configs"
        )
    if args.tiny:
        args.model, args.limit = str(REPO / "demo/whisper-tiny-random"), args.limit or 4
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    THREADS.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    report = run(args)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / (args.name or "quality")
    write_json(stem.with_suffix(".json"), report)
    text = markdown(report, "python -m benchmarks.quality " + " ".join(sys.argv[1:]))
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
