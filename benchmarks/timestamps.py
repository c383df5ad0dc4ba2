"""Does an adapter still predict segment times? Held-out clips packed into windows with known
boundaries, transcribed with ``lightning-asr transcribe --timestamps true``, boundaries compared.

    python -m benchmarks.timestamps --base ../shared/models/whisper-base --data ../shared/data/cv-synth/en \\
        --model zero-shot= --model notimestamps=ADAPTER --model timestamp-share-0.5=ADAPTER2

Each window joins 2-4 test clips with 0.3-1.0 s pauses after a 0-1 s lead-in (at most 28 s). A clip's
start and end in the window are its known boundaries; each is matched to the nearest start or end of
a predicted segment. Reported per model: the median and mean distance, the share within 0.5 s,
segments predicted per clip, windows with no timestamped segment, and the WER of the window's text.
Results: ``benchmarks/results/timestamps.{json,md}``.
"""

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks import commit, lightning_asr, machine, write_json
from lightning_asr.batch import SAMPLING_RATE
from lightning_asr.data.audio import AudioError, clip_name, read_clip
from lightning_asr.data.sources import common_voice_index
from lightning_asr.model.metrics import error_rates
from lightning_asr.text import normalize

REPO = Path(__file__).resolve().parents[1]


def pack(data: str, split: str, windows: int, seed: int, folder: Path, longest: float = 28.0) -> list[dict]:
    """Write ``windows`` WAV files of joined clips; each with its clips' (start, end, text)."""
    rows, _ = common_voice_index(str(Path(data).parent), Path(data).name, split)
    cells, texts = rows["audio"].to_pylist(), rows["text"].to_pylist()
    rng = np.random.default_rng(seed)
    order, packed = rng.permutation(len(cells)), []
    folder.mkdir(parents=True, exist_ok=True)
    cursor = 0
    while len(packed) < windows and cursor < len(order):
        audio, known = [np.zeros(int(rng.uniform(0, 1) * SAMPLING_RATE), np.float32)], []
        t = len(audio[0]) / SAMPLING_RATE
        for _ in range(int(rng.integers(2, 5))):
            if cursor >= len(order):
                break
            i = order[cursor]
            cursor += 1
            try:
                clip = read_clip(cells[i], clip_name(cells[i]))
            except AudioError:
                continue
            gap = np.zeros(int(rng.uniform(0.3, 1.0) * SAMPLING_RATE), np.float32)
            if t + len(clip) / SAMPLING_RATE > longest:
                break
            known.append({"start": round(t, 3), "end": round(t + len(clip) / SAMPLING_RATE, 3), "text": texts[i]})
            audio += [clip, gap]
            t += (len(clip) + len(gap)) / SAMPLING_RATE
        if len(known) >= 2:
            path = folder / f"window{len(packed):03d}.wav"
            sf.write(path, np.concatenate(audio), SAMPLING_RATE)
            packed.append({"path": str(path), "clips": known})
    return packed


def transcribe(
    windows: list[dict], base: str, adapter: str | None, language: str, out: Path, max_new_tokens: int | None
) -> list[dict]:
    """``lightning-asr transcribe`` as users type it; the jsonl rows in window order."""
    command = [
        *lightning_asr(),
        "transcribe",
        *(w["path"] for w in windows),
        "--base",
        base,
        "--language",
        language,
        "--timestamps",
        "true",
        "--output",
        str(out),
        *(["--max_new_tokens", str(max_new_tokens)] if max_new_tokens else []),
        *(["--adapter", adapter] if adapter else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if not Path(f"{out}.jsonl").is_file():
        raise SystemExit(f"transcribe failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in Path(f"{out}.jsonl").read_text().splitlines()]


def score(windows: list[dict], rows: list[dict], language: str) -> dict:
    distances, counts, empty = [], [], 0
    for window, row in zip(windows, rows):
        segments = row.get("segments") or []
        empty += not segments
        edges = np.array([t for s in segments for t in (s["start"], s["end"])] or [np.inf])
        for clip in window["clips"]:
            distances += [float(np.abs(edges - clip[k]).min()) for k in ("start", "end")]
        counts.append(len(segments) / len(window["clips"]))
    d = np.array(distances)
    code = "en" if language.lower() in ("en", "english") else language
    # Each clip normalised alone, and each predicted segment: Whisper's English normaliser reads
    # "seven eight" joined as 78, which would score a right transcript of two digits as wrong.
    refs = [" ".join(normalize(c["text"], code) for c in w["clips"]) for w in windows]
    preds = [
        " ".join(normalize(s["text"], code) for s in r["segments"]) if r.get("segments") else r.get("text", "")
        for r in rows
    ]
    return {
        "windows": len(windows),
        "clips": sum(len(w["clips"]) for w in windows),
        "boundary_median_s": float(np.median(d)),
        "boundary_mean_s": float(np.mean(np.minimum(d, 30.0))),
        "within_0.5_s": float(np.mean(d <= 0.5)),
        "segments_per_clip": float(np.mean(counts)),
        "windows_without_segments": empty,
        "wer_norm": error_rates(refs, preds, code)["wer_norm"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the adapters' base model folder or id")
    parser.add_argument("--data", required=True, help="a Common Voice locale folder (its test split is packed)")
    parser.add_argument("--language", default="English")
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=[ADAPTER]",
        help="a row: NAME= for the base alone, NAME=FOLDER for an adapter",
    )
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="transcribe's token budget per window (default: transcribe's, the whole window)",
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/timestamps")
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    parser.add_argument("--name", default="timestamps", help="results file stem")
    args = parser.parse_args()
    work = Path(args.work)
    windows = pack(args.data, args.split, args.windows, args.seed, work / "windows")
    rows = {}
    for item in args.model:
        name, adapter = item.split("=", 1)
        rows[name] = score(
            windows,
            transcribe(windows, args.base, adapter or None, args.language, work / name, args.max_new_tokens),
            args.language,
        )
        print(name, rows[name], flush=True)
    report = {
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "command": " ".join(["python -m benchmarks.timestamps", *sys.argv[1:]]),
        "max_new_tokens": args.max_new_tokens,
        "models": rows,
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    report["windows"], report["data"], report["split"] = len(windows), args.data, args.split
    write_json(results / f"{args.name}.json", report)
    (results / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        f"# Timestamps after fine-tuning: {report['windows']} packed windows of {report['data']} ({report['split']}), "
        f"{report['date']}",
        "",
        f"Machine: {report['machine']}; commit {report['commit']}. Command: `{report['command']}`.",
        "",
        "| model | clips | boundary error, median s | mean s | within 0.5 s | segments per clip | windows without segments | WER % (normalised) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['clips']} | {r['boundary_median_s']:.2f} | {r['boundary_mean_s']:.2f} | {100 * r['within_0.5_s']:.0f} % | "
        f"{r['segments_per_clip']:.2f} | {r['windows_without_segments']} | {100 * r['wer_norm']:.1f} |"
        for name, r in report["models"].items()
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
