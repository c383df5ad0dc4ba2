"""Does fine-tuning help, and as well as the guide's recipe? One command, on a GPU.

    python benchmarks/quality.py --model ../shared/models/whisper-base --data ../shared/data/cv-synth --steps 400

1. zero-shot WER/CER of the base on ``mr`` test (and on ``en`` test, the sanity check);
2. ``lightning-asr fit`` with the guide's hyper-parameters (int8, LoRA r=32 on q/v, lr 1e-3,
   50 warm-up steps, batch 8) for ``--steps`` steps, then WER/CER with the saved adapter loaded by
   plain ``peft``;
3. the same for ``benchmarks/seed_recipe.py`` (the guide's pipeline);
4. writes ``benchmarks/results/quality-<date>.{json,md}``.

Every evaluation runs the same routine: the base unquantized (fp16 on GPU), the adapter by
``PeftModel.from_pretrained``, greedy ``generate(language, task)`` from the audio alone, our
normaliser, jiwer.
"""

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_asr.data import SpeechDataModule  # noqa: E402
from lightning_asr.decode import greedy, prompt_ids  # noqa: E402
from lightning_asr.module import merged  # noqa: E402
from lightning_asr.text import normalize  # noqa: E402
from lightning_asr.whisper import language_code, load_base  # noqa: E402


@torch.no_grad()
def evaluate(model: str, data: str, locale: str, language: str, adapter: str | None = None, limit: int | None = None,
             batch_size: int = 32, max_new_tokens: int = 128, dtype: torch.dtype | None = None, merge: bool = False,
             decoding: str = "generate") -> dict:
    """WER (orthographic and normalised) and CER of base (+ adapter) on ``locale``'s test split;
    ``merge``: decode as ``model.merge_for_eval`` does, with the adapter merged into the base;
    ``decoding``: ``generate`` or ``static`` (``model.decoding``)."""
    from peft import PeftModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = dtype or (torch.float16 if device == "cuda" else torch.float32)
    net = load_base(model, "none", device, dtype)
    if adapter:
        net = PeftModel.from_pretrained(net, adapter)
    net.eval()
    dm = SpeechDataModule(path=data, locale=locale, model=model, language=language, eval_batch_size=batch_size,
                          num_workers=4 if device == "cuda" else 0, max_samples=limit)
    dm.setup("test")
    refs, preds = [], []
    start = time.perf_counter()
    for batch in dm.test_dataloader():
        batch = dm.on_after_batch_transfer(batch, 0)
        features = batch["input_features"].to(device, dtype)
        with merged(net, merge):
            if decoding == "static":
                whisper = net.get_base_model() if adapter else net
                ids = greedy(whisper, features, prompt_ids(dm.processor.tokenizer), max_new_tokens)
            else:
                ids = net.generate(input_features=features, language=language_code(language), task="transcribe",
                                   max_new_tokens=max_new_tokens)
        preds += dm.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        refs += batch["texts"]
    seconds = time.perf_counter() - start
    norm_refs, norm_preds = [normalize(r) for r in refs], [normalize(p) or "∅" for p in preds]
    return {
        "clips": len(refs),
        "wer": jiwer.wer(refs, [p.strip() or "∅" for p in preds]),
        "wer_norm": jiwer.wer(norm_refs, norm_preds),
        "cer": jiwer.cer(norm_refs, norm_preds),
        "eval_seconds": seconds,
        "examples": list(zip(refs[:3], preds[:3])),
    }


def machine_name() -> str:
    # platform.processor() is empty on many Linux machines; fall back to the architecture.
    return torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()


def ours(model: str, data: str, out: Path, steps: int, seed: int, *extra: str) -> dict:
    args = [
        sys.executable, "-m", "lightning_asr.cli", "fit", "--config", str(REPO / "configs/whisper-large-v2-int8-mr.yaml"),
        f"--model.model={model}", f"--data.path={data}", "--data.train_split=train",
        f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
        "--model.validate_before_training=false", "--model.gradient_checkpointing=false",
        "--trainer.precision=bf16-mixed", f"--seed_everything={seed}", "--trainer.callbacks=[]",
        f"--trainer.logger.init_args.save_dir={out}", f"--adapter_checkpoint.dirpath={out}/adapters",
        "--trainer.enable_progress_bar=false", f"--trainer.accelerator={'gpu' if torch.cuda.is_available() else 'cpu'}", *extra,
    ]
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=REPO)
    return {"wall_seconds": time.perf_counter() - start, "adapter": str(out / "adapters" / "last")}


def pipeline_wer(exported: str, data: str, limit: int | None = None) -> dict:
    """WER of an exported folder through the standard transformers pipeline (30 s windows)."""
    from transformers import pipeline

    from lightning_asr.audio import load_audio
    from lightning_asr.data import common_voice_index

    rows = common_voice_index(data, "mr", "test")[0].to_pylist()[:limit]
    device = 0 if torch.cuda.is_available() else -1
    pipe = pipeline("automatic-speech-recognition", model=exported, device=device,
                    dtype=torch.float16 if device == 0 else torch.float32)
    outputs = pipe([{"raw": load_audio(r["audio"]), "sampling_rate": 16000} for r in rows], batch_size=32,
                   generate_kwargs={"language": "mr", "task": "transcribe", "max_new_tokens": 128})
    refs, preds = [normalize(r["text"]) for r in rows], [normalize(o["text"]) or "∅" for o in outputs]
    return {"clips": len(rows), "wer_norm": jiwer.wer(refs, preds), "cer": jiwer.cer(refs, preds)}


def baseline(model: str, data: str, out: Path, steps: int, seed: int) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "benchmarks/seed_recipe.py"), model, str(Path(data) / "mr"), str(out),
                    f"--max-steps={steps}", f"--seed={seed}"], check=True, cwd=REPO)
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics | {"wall_seconds": time.perf_counter() - start, "adapter": str(out / "adapter")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO.parent / "shared/models/whisper-base"))
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/cv-synth"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", default="/tmp/quality")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N test clips (smoke runs)")
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    parser.add_argument("--merge-check", metavar="ADAPTER", help="only compare bf16 decoding of ADAPTER with and without "
                        "model.merge_for_eval (goal 5 of issue 7), into quality-merge-<date>.{json,md}")
    parser.add_argument("--decoding-check", metavar="ADAPTER", help="only compare bf16 decoding of ADAPTER by generate() "
                        "and by model.decoding: static, into quality-decoding-<date>.{json,md}")
    args = parser.parse_args()
    if args.merge_check:
        return decode_check("merge", args.model, args.data, args.merge_check, args.limit, Path(args.results))
    if args.decoding_check:
        return decode_check("decoding", args.model, args.data, args.decoding_check, args.limit, Path(args.results))
    work = Path(args.work)
    report = {"machine": machine_name(),
              "date": datetime.date.today().isoformat(), "steps": args.steps, "seed": args.seed,
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip(),
              "torch": torch.__version__}
    limit = args.limit
    report["english_zero_shot_first20_fp32"] = evaluate(args.model, args.data, "en", "English", limit=min(limit or 20, 20), dtype=torch.float32)
    report["english_zero_shot"] = evaluate(args.model, args.data, "en", "English", limit=limit)
    report["zero_shot"] = evaluate(args.model, args.data, "mr", "Marathi", limit=limit)
    report["ours_train"] = ours(args.model, args.data, work / "ours", args.steps, args.seed)
    report["ours"] = evaluate(args.model, args.data, "mr", "Marathi", adapter=report["ours_train"]["adapter"], limit=limit)
    # The fast mode: bf16 base, trimmed encoder, no checkpointing; evaluated on standard 30 s windows.
    report["ours_fast_train"] = ours(args.model, args.data, work / "fast", args.steps, args.seed, "--model.quantization=none",
                                     "--model.trim_encoder=true")
    report["ours_fast"] = evaluate(args.model, args.data, "mr", "Marathi", adapter=report["ours_fast_train"]["adapter"], limit=limit)
    subprocess.run([sys.executable, "-m", "lightning_asr.cli", "export", report['ours_fast_train']['adapter'],
                    str(work / 'fast-exported')], check=True, cwd=REPO)
    report["ours_fast_pipeline"] = pipeline_wer(str(work / "fast-exported"), args.data, limit)
    report["baseline_train"] = baseline(args.model, args.data, work / "baseline", args.steps, args.seed)
    report["baseline"] = evaluate(args.model, args.data, "mr", "Marathi", adapter=report["baseline_train"]["adapter"], limit=limit)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"quality-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    rows = [("zero-shot whisper-base", report["zero_shot"], None),
            ("ours: lightning-asr fit (int8, the guide's settings)", report["ours"], report["ours_train"]["wall_seconds"]),
            ("ours, fast: bf16 base + trimmed encoder", report["ours_fast"], report["ours_fast_train"]["wall_seconds"]),
            ("baseline: guide's recipe (seed_recipe.py)", report["baseline"], report["baseline_train"]["wall_seconds"])]
    lines = [f"# Quality: whisper-base on cv-synth/mr test ({report['zero_shot']['clips']} clips), {args.steps} steps",
             "", f"Machine: {report['machine']}; commit {report['commit']}; torch {report['torch']}; seed {args.seed}.",
             f"Command: `python benchmarks/quality.py --steps {args.steps}`", "",
             "| run | WER | WER (normalised) | CER | train wall time (s) |", "|---|---|---|---|---|"]
    for name, m, wall in rows:
        lines.append(f"| {name} | {100 * m['wer']:.1f} % | {100 * m['wer_norm']:.1f} % | {100 * m['cer']:.1f} % | {'' if wall is None else f'{wall:.0f}'} |")
    pipe = report["ours_fast_pipeline"]
    lines += ["", f"The fast adapter exported (`lightning-asr export`) and run through `pipeline(\"automatic-speech-recognition\")` "
              f"with standard 30 s windows: WER {100 * pipe['wer_norm']:.1f} % normalised, CER {100 * pipe['cer']:.1f} %."]
    en = report["english_zero_shot"]
    lines += ["", f"English sanity check (adapter-free base, cv-synth/en test, {en['clips']} clips): WER {100 * en['wer_norm']:.1f} % normalised; "
              f"first 20 clips in fp32: {100 * report['english_zero_shot_first20_fp32']['wer_norm']:.2f} %."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# What each check compares: (row title, evaluate() arguments); the first row is the default.
CHECKS = {
    "merge": ("Merged bf16 evaluation", [("LoRA branch (default)", {}), ("merged (model.merge_for_eval)", {"merge": True})]),
    "decoding": ("Static decoding in bf16", [("generate() (default)", {}), ("static (model.decoding: static)", {"decoding": "static"})]),
}


def decode_check(kind: str, model: str, data: str, adapter: str, limit: int | None, results: Path) -> None:
    """Does a decoding option change WER? bf16, same adapter, same clips, with and without it."""
    title, variants = CHECKS[kind]
    runs = {name: evaluate(model, data, "mr", "Marathi", adapter=adapter, limit=limit, dtype=torch.bfloat16, **kwargs)
            for name, kwargs in variants}
    machine = machine_name()
    report = {"machine": machine, "date": datetime.date.today().isoformat(), "adapter": adapter, "torch": torch.__version__,
              "runs": runs}
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"quality-{kind}-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    clips = next(iter(runs.values()))["clips"]
    lines = [f"# {title}: whisper-base + one adapter on cv-synth/mr test ({clips} clips)", "",
             f"Machine: {machine}; torch {report['torch']}. Command: `python benchmarks/quality.py --{kind}-check ADAPTER`.", "",
             "| decoding (bf16 base) | WER | WER (normalised) | CER | seconds |", "|---|---|---|---|---|"]
    for name, m in runs.items():
        lines.append(f"| {name} | {100 * m['wer']:.2f} % | {100 * m['wer_norm']:.2f} % | {100 * m['cer']:.2f} % | {m['eval_seconds']:.0f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

if __name__ == "__main__":
    main()
