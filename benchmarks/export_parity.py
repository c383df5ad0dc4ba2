"""Does an exported fine-tune score what it scored in validation? ``lightning-asr export --check`` on real
whisper-base adapters, per format, on each task's test split.

    python -m benchmarks.export_parity --adapter fsdd-en=ADAPTER --adapter cv-synth-mr=ADAPTER \\
        --model ../shared/models/whisper-base

Each (task, format) runs the command users type, ``lightning-asr export ADAPTER OUT --format F
[--quantization Q] --check DATA``: the adapter decoded by this package's validation (its base loaded as
trained), the exported model by its own runtime (faster-whisper for ``ct2``, the transformers pipeline
for ``transformers``), both scored by one routine. Results: ``benchmarks/results/export.{json,md}``.
"""

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import commit, lightning_asr, machine, write_json

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = {"cv-synth-mr": "cv-synth/mr", "fsdd-en": "real/fsdd-takes5-49/en"}  # under --data-dir
# format name: the export arguments
FORMATS = {
    "ct2-int8": ["--format", "ct2", "--quantization", "int8"],
    "ct2-int8_float16": ["--format", "ct2", "--quantization", "int8_float16"],
    "ct2-float16": ["--format", "ct2", "--quantization", "float16"],
    "transformers-fp16": ["--format", "transformers", "--dtype", "float16"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", action="append", required=True, metavar="TASK=FOLDER")
    parser.add_argument("--model", default=str(SHARED / "models/whisper-base"), help="the adapters' base")
    parser.add_argument("--formats", nargs="+", default=["ct2-int8", "transformers-fp16"], choices=list(FORMATS))
    parser.add_argument("--data-dir", default=str(SHARED / "data"), help="folder holding cv-synth/ and real/")
    parser.add_argument("--limit", type=int, default=None, help="check only the first N clips")
    parser.add_argument("--work", default="/tmp/export-parity")
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    parser.add_argument("--name", default="export", help="results file stem (export-gpu: the GPU machine's run)")
    args = parser.parse_args()
    rows = {}
    for item in args.adapter:
        task, adapter = item.split("=", 1)
        for name in args.formats:
            out = Path(args.work) / task / name
            command = [
                *lightning_asr(),
                "export",
                adapter,
                str(out),
                "--base",
                args.model,
                *FORMATS[name],
                "--overwrite",
                "true",
                "--check",
                str(Path(args.data_dir) / DATA[task]),
                *(["--check_limit", str(args.limit)] if args.limit else []),
            ]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            if not (out / "parity.json").is_file():
                raise SystemExit(f"{task}/{name} failed:\n{done.stderr[-3000:]}")
            rows[f"{task}/{name}"] = json.loads((out / "parity.json").read_text()) | {
                "exit_code": done.returncode,
                "wall_seconds": time.perf_counter() - start,
            }
            print(task, name, rows[f"{task}/{name}"]["delta_points"], flush=True)
    report = {
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "command": " ".join(["python -m benchmarks.export_parity", *sys.argv[1:]]),
        "runs": rows,
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / f"{args.name}.json", report)
    (results / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        f"# Export parity: whisper-base adapters exported and re-scored in their own runtime, {report['date']}",
        "",
        f"Machine: {report['machine']}; commit {report['commit']}. Command: `{report['command']}`.",
        "",
        "WER (as written / normalised) on each task's test split: the adapter through this package's validation "
        "decode (base loaded as trained), the exported model through its runtime, one scorer. The check fails "
        "(exit 1) beyond 1 point.",
        "",
        "| task / format | clips | runtime | adapter WER % | exported WER % | difference, points | clips transcribed differently | check | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["runs"].items():
        a, e, d = r["adapter_scores"], r["exported_scores"], r["delta_points"]
        lines.append(
            f"| {name} | {r['clips']} | {r['runtime']} | {100 * a['wer']:.2f} / {100 * a['wer_norm']:.2f} | "
            f"{100 * e['wer']:.2f} / {100 * e['wer_norm']:.2f} | {d['wer']:+.2f} / {d['wer_norm']:+.2f} | "
            f"{r['clips_transcribed_differently']} | {'pass' if r['within_tolerance'] else '**fail**'} | {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
