"""What a fine-tune costs the base elsewhere, and the levers against it (issue 50), as parts of ``benchmarks.quality``:

- the levers, as variants of the recipe config: ``replay`` (a third of every epoch drawn from the task's retained set,
  in its own language, through ``data.sources``: the target's rows are drawn once an epoch, as without it, so the
  target sees equal data and the run takes 1.5x the steps), ``no-speech`` (a tenth of the training items swapped for
  generated silence, noise or music labelled with no words, ``data.no_speech.share``) and both;
- the hallucination measure: on generated silence, noise and music (:class:`~lightning_asr.data.nonspeech.NonSpeechSet`),
  the share of clips on which the model writes any words, scored by validation's own loop (``val_nospeech/words``);
- the paired intervals of every run against the baseline on the retained WER and that share.

Alone, ``python -m benchmarks.forgetting`` scores the zero-shot base on the non-speech clips in each language: the
reference the levers are held to.
"""

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks import commit, machine, write_json
from lightning_asr.data.nonspeech import KINDS, NonSpeechSet
from lightning_asr.model.knobs import Decoding
from lightning_asr.model.metrics import paired_bootstrap, wrote_words
from lightning_asr.model.module import WhisperLoRA

REPO = Path(__file__).resolve().parents[1]
NO_SPEECH = ["--data.no_speech.share=0.1"]


def replay(task: tuple) -> list[str]:
    """``data.sources``: the task's corpus at weight 2 and its retained set, in the retained language, at weight 1."""
    data, locale, _, retained = task
    sources = [
        {"name": "target", "path": str(data), "locale": locale, "weight": 2},
        {
            "name": "retained",
            "path": str(retained[0]),
            "locale": retained[1],
            "language": retained[2],
            "weight": 1,
            "val_split": "",
        },
    ]
    return [f"--data.sources={json.dumps(sources)}"]


# name: the fit arguments of the lever, a list or a function of the task (corpus, locale, language, retained).
LEVERS = {
    "replay": replay,
    "no-speech": NO_SPEECH,
    "replay-no-speech": lambda task: replay(task) + NO_SPEECH,
}


def scoring_module(
    model: str, language: str, adapter: str | None, from_config: bool = False, dtype=None, decoding=None
) -> WhisperLoRA:
    """Base (+ adapter) as every adapter here is scored: the base unquantized (fp16 on GPU, fp32 on CPU), the
    adapter loaded by ``PeftModel.from_pretrained``, greedy ``generate()`` to 128 tokens unless ``decoding`` says."""
    dtype = dtype or (torch.float16 if torch.cuda.is_available() else torch.float32)
    return WhisperLoRA(
        model=model,
        language=language,
        quantization="none",
        dtype=str(dtype).removeprefix("torch."),
        from_config=from_config,
        adapter=adapter,
        validate_before_training=False,
        decoding=decoding or Decoding("generate", 128),
    )


def no_speech_words(model: str, language: str, adapter: str | None, clips: int, from_config: bool = False) -> dict:
    """Base (+ adapter) on ``clips`` generated non-speech clips (silence, noise, music in turn): the share on which it
    writes any words (as validation's ``val_nospeech/words`` counts them), the share that runs to the token limit, and
    each clip's 0/1 (for paired intervals). Decoded as :func:`benchmarks.quality.evaluate` decodes: unquantized base,
    fp16 on GPU, the package's own ``transcribe``."""
    module = scoring_module(model, language, adapter, from_config)
    module.configure_model()
    module.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    data = NonSpeechSet(clips, module.processor, module.language)
    written, degenerate = [], []
    for start in range(0, clips, 16):
        items = [data[i] for i in range(start, min(clips, start + 16))]
        features = torch.stack([torch.from_numpy(x["input_features"]) for x in items]).to(module.device)
        texts, runaway = module.transcribe(features)
        written += [int(wrote_words(t, module.language)) for t in texts]
        degenerate += runaway
    return {
        "clips": clips,
        "kinds": list(KINDS),
        "words": statistics.mean(written),
        "degenerate": statistics.mean(degenerate),
        "clip_words": written,
    }


def lever_rows(runs: dict, baseline: str) -> dict:
    """Per run: the retained WER and the share of non-speech clips with words, each as a mean over seeds and, against
    ``baseline``, a paired difference over the same clips with its 95 % bootstrap interval."""
    out: dict = {}
    base = list(runs[baseline].values())
    for name, seeds in runs.items():
        row = {}
        for key, errors, words in (("retained", "clip_errors", "clip_words"), ("no_speech", "clip_words", None)):
            scored = [s[key] for s in seeds.values() if key in s]
            if not scored or key not in base[0]:
                continue
            field = "wer_norm" if key == "retained" else "words"
            row[key] = {"mean": statistics.mean(s[field] for s in scored)}
            if name != baseline:
                weights = base[0][key][words] if words else [1] * len(scored[0][errors])
                diff, low, high = paired_bootstrap([s[errors] for s in scored], [s[key][errors] for s in base], weights)
                row[key] |= {"diff": diff, "ci95": [low, high]}
        out[name] = row
    return out


def lever_table(result: dict, baseline: str) -> list[str]:
    """The markdown rows of :func:`lever_rows` for one task, with the zero-shot base first."""
    zero = result["zero_shot"]
    rows = lever_rows(result["runs"], baseline)
    if not any(rows.values()):
        return []

    def cell(row: dict, key: str) -> str:
        if key not in row:
            return "–"
        text = f"{100 * row[key]['mean']:.1f}"
        if "diff" in row[key]:
            low, high = row[key]["ci95"]
            text += f" ({100 * row[key]['diff']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}])"
        return text

    retained = result.get("retained_zero_shot", {}).get("wer_norm")
    words = zero.get("no_speech", {}).get("words")
    lines = [
        "",
        f"What the fine-tune costs elsewhere, against `{baseline}` (paired over the same clips, 95 % CI):",
        "",
        "| run | retained WER % (− baseline) | non-speech clips with words % (− baseline) |",
        "|---|---|---|",
        "| zero-shot base | " + " | ".join("–" if v is None else f"{100 * v:.1f}" for v in (retained, words)) + " |",
    ]
    for name, row in rows.items():
        lines.append(f"| `{name}` | {cell(row, 'retained')} | {cell(row, 'no_speech')} |")
    return lines


def zero_shot_report(model: str, languages: list[str], clips: int, from_config: bool = False) -> dict:
    """The base alone on ``clips`` generated non-speech clips in each of ``languages``: the reference share the levers
    are held to (issue 50: no more words on silence and noise after a fine-tune than before it)."""
    report = {"machine": machine(), "commit": commit(), "date": datetime.date.today().isoformat(), "model": model}
    for language in languages:
        start = time.perf_counter()
        scored = no_speech_words(model, language, None, clips, from_config)
        words = scored.pop("clip_words")
        kinds = {k: statistics.mean(words[i :: len(KINDS)]) for i, k in enumerate(KINDS)}
        report[language] = scored | {"per_kind": kinds, "seconds": time.perf_counter() - start}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="Zero-shot: the share of generated non-speech clips given words")
    parser.add_argument("--model", default=str(REPO.parent / "shared/models/whisper-base"))
    parser.add_argument("--languages", nargs="+", default=["Marathi", "English"])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    parser.add_argument("--from-config", action="store_true", help="random weights from the model's config (the tests)")
    args = parser.parse_args()
    report = zero_shot_report(args.model, args.languages, args.clips, args.from_config)
    lines = [
        f"# Words on non-speech, zero-shot: {Path(args.model).name}, {args.clips} generated clips a language",
        "",
        f"Machine: {report['machine']}; commit {report['commit']}; {report['date']}. "
        f"Command: `python -m benchmarks.forgetting {' '.join(sys.argv[1:])}`.",
        "",
        "Share of clips on which the base writes any words (after the language's normaliser), and the share that runs to the "
        "128-token limit; the clips are silence, noise and music in turn (`lightning_asr/data/nonspeech.py`).",
        "",
        "| language | any words | silence | noise | music | to the token limit |",
        "|---|---|---|---|---|---|",
    ]
    for language in args.languages:
        r = report[language]
        kinds = " | ".join(f"{100 * r['per_kind'][k]:.0f} %" for k in KINDS)
        lines.append(f"| {language} | {100 * r['words']:.0f} % | {kinds} | {100 * r['degenerate']:.0f} % |")
    results = Path(args.results)
    write_json(results / "forgetting-zero-shot.json", report)
    (results / "forgetting-zero-shot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
