"""Shards against the release they were written from: clips per second in one process, and start-up as rows grow.

    python -m benchmarks.shards [--data ../shared/data/cv-synth] [--rows 10000 100000 1000000]

1. throughput: ``cv-synth/mr``'s train split read as the release (MP3 files) and as shards written from it by
   ``lightning-asr shard`` (the same MP3 bytes in Parquet), one process (``num_workers: 0``), the clips in a shuffled
   order (what training asks for): decode + resample + log-mel features, clips/s; median of ``--repeats``, the two
   readers in turn;
2. start-up: ``rows("train")`` (what ``setup`` reads before the first step) of a release ``train.tsv`` and of shards
   holding the same number of rows (10 k, 100 k, 1 M; synthetic: short transcripts, 1 KB of audio bytes a row,
   10,000 rows a shard), best of ``--repeats``.
Writes ``benchmarks/results/shards.{json,md}``.
"""

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import commit, machine, write_json
from benchmarks.data_throughput import HEADER, processor_folder
from lightning_asr.data import SpeechDataModule
from lightning_asr.data.shards import ROW_GROUP, SCHEMA, shard, write_sidecar

REPO = Path(__file__).resolve().parents[1]


def clips_per_second(data: SpeechDataModule, clips: int, seed: int = 0) -> float:
    data.setup("fit")
    train = data.datasets["train"]
    order = np.random.default_rng(seed).permutation(len(train))[:clips]
    start = time.perf_counter()
    for i in order:
        train[int(i)]
    return len(order) / (time.perf_counter() - start)


def throughput(release: Path, work: Path, model: str, clips: int, repeats: int) -> dict:
    shard(str(work / "shards"), str(release), split="train", locale="mr", rows_per_shard=2000)
    common = dict(model=model, language="mr", train_split="train", val_split="train", num_workers=0)
    readers = {
        "release": dict(path=str(release), locale="mr"),
        "shards": dict(source="shards", path=str(work / "shards")),
    }
    runs: dict[str, list[float]] = {name: [] for name in readers}
    for seed in range(repeats):  # the two readers in turn, so that a machine that slows down slows both
        for name, kwargs in readers.items():
            runs[name].append(clips_per_second(SpeechDataModule(**kwargs, **common), clips, seed))
    return {name: {"clips_per_s": statistics.median(r), "runs": r} for name, r in runs.items()}


def synthetic_release(folder: Path, rows: int) -> Path:
    (folder / "mr" / "clips").mkdir(parents=True)
    lines = [HEADER] + [f"c\tcommon_voice_mr_{i:08d}.mp3\ts\tवाक्य क्रमांक {i}\t\t2\t0\t\t\t\t\tmr\t" for i in range(rows)]
    (folder / "mr" / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


def synthetic_shards(folder: Path, rows: int, per_shard: int = 10_000) -> Path:
    folder.mkdir(parents=True)
    count = -(-rows // per_shard)
    for index in range(count):
        n = min(per_shard, rows - index * per_shard)
        first = index * per_shard
        table = pa.table(
            {
                "audio": [{"bytes": b"\0" * 1024, "path": f"c{first + i}.mp3"} for i in range(n)],
                "text": [f"वाक्य क्रमांक {first + i}" for i in range(n)],
                "duration": np.full(n, 4.0),
            },
            schema=SCHEMA,
        )
        file = folder / f"train-{index:05d}-of-{count:05d}.parquet"
        pq.write_table(table, file, row_group_size=ROW_GROUP)
        write_sidecar(file, table.select(["text", "duration"]))
    return folder


def startup(work: Path, sizes: list[int], repeats: int) -> dict:
    out = {}
    for rows in sizes:
        release = synthetic_release(work / f"release-{rows}", rows)
        shards = synthetic_shards(work / f"shards-{rows}", rows)
        times = {}
        for name, kwargs in (
            ("release", dict(path=str(release), locale="mr")),
            ("shards", dict(source="shards", path=str(shards))),
        ):
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                assert len(SpeechDataModule(train_split="train", **kwargs).rows("train")) == rows
                seconds.append(time.perf_counter() - start)
            times[name] = min(seconds)
        out[str(rows)] = times
    return out


def markdown(report: dict, command: str) -> str:
    t = report["throughput"]
    lines = [
        "# Shards against the release they were written from",
        "",
        f"Machine: {report['machine']}; commit {report['commit']}; {report['date']}. Command: `{command}`.",
        "",
        f"## Clips per second, one process, shuffled order ({report['clips']} clips of cv-synth/mr train, "
        f"median of {report['repeats']})",
        "",
        "| reader | clips/s (decode + resample + features) | runs |",
        "|---|---|---|",
    ]
    for name, row in t.items():
        lines.append(f"| {name} | {row['clips_per_s']:.1f} | {' · '.join(f'{r:.1f}' for r in row['runs'])} |")
    lines += ["", '## Start-up: `rows("train")` before the first step, seconds (best of runs)', ""]
    lines += ["| rows | release train.tsv | shards (10,000 rows a file) |", "|---|---|---|"]
    for rows, times in report["startup"].items():
        lines.append(f"| {int(rows):,} | {times['release']:.2f} | {times['shards']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/cv-synth"))
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    args = parser.parse_args()
    model = processor_folder()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report = {
            "machine": machine(),
            "commit": commit(),
            "date": datetime.date.today().isoformat(),
            "clips": args.clips,
            "repeats": args.repeats,
            "throughput": throughput(Path(args.data), work, model, args.clips, args.repeats),
            "startup": startup(work, args.rows, args.repeats),
        }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / "shards.json", report)
    text = markdown(report, "python -m benchmarks.shards " + " ".join(sys.argv[1:]))
    (results / "shards.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
