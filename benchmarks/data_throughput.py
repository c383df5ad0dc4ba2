"""How fast the data path is, and what a million-row release costs to index.

    python -m benchmarks.data_throughput [--clips DIR] [--rows 1000000]

1. clips/s for decode (48 kHz MP3) + resample + log-mel features, one process and through a
   DataLoader with ``--workers`` processes, plain and with ``data.augment`` at its most expensive
   (speed perturbation and noise on every clip), against what training consumes (the fastest
   config's samples/s in benchmarks/results/speed.md);
2. a synthetic ``train.tsv`` of ``--rows`` rows (pointing at a few real clips): time and peak RSS
   of ``setup("fit")`` (goal: <= 10 s and <= 1 GiB on a 2-core, 24 GiB machine), then the time
   ``group_by_length`` takes to find their lengths, from ``clip_durations.tsv`` and from file sizes.
Writes ``benchmarks/results/data.{json,md}`` (the current result; git keeps the earlier ones).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_json
from benchmarks.speed import write_processor
from lightning_asr.data import SpeechDataModule
from lightning_asr.data.transforms import AudioAugment

REPO = Path(__file__).resolve().parents[1]

PARTS = ["throughput", "index", "validation"]
HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"


def processor_folder() -> str:
    """A 30 s Whisper processor plus a config (for the label limit); no weights are needed."""
    folder = write_processor(Path(tempfile.mkdtemp()) / "whisper-30s")
    config = json.loads((REPO / "demo" / "whisper-tiny-random" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"max_source_positions": 1500}))
    return str(folder)


# The report's rows: (report part, measure, value), formatted with that part's numbers.
ROWS = [
    ("throughput", "decode + resample + features, one process", "{one_process_clips_per_s:.1f} clips/s"),
    ("throughput", "through the DataLoader, {workers} workers", "{loader_clips_per_s:.1f} clips/s"),
    (
        "throughput_augmented",
        "the same with `data.augment` (speed 0.9/1.0/1.1, white noise on every clip), one process",
        "{one_process_clips_per_s:.1f} clips/s",
    ),
    (
        "throughput_augmented",
        "with `data.augment`, through the DataLoader, {workers} workers",
        "{loader_clips_per_s:.1f} clips/s",
    ),
    (
        "validation",
        "a validation batch of {clips} speed-benchmark clips (16 kHz wav, 2-10 s), one process (best of 3): "
        "features over the full 30 s window",
        "{first_batch_full_window_s:.2f} s",
    ),
    ("validation", "the same with `log_mel` (the STFT over the audio plus 1 s)", "{first_batch_log_mel_s:.2f} s"),
    ("validation", "the loader's first batch (`log_mel`, collation included)", "{first_batch_loader_s:.2f} s"),
    (
        "validation",
        "after decoding that batch (96 tokens a row): texts, normalisation, degeneracy, WER, normalised WER, CER",
        "{post_processing_s:.2f} s",
    ),
    ("index", '`setup("fit")` on a {rows:,}-row train.tsv', "{setup_seconds:.2f} s, peak RSS {peak_rss_gib:.2f} GiB"),
    (
        "index",
        "`group_by_length` lengths of those rows from `clip_durations.tsv`",
        "{lengths_from_durations_seconds:.2f} s",
    ),
    (
        "index",
        "the same from file sizes: one `stat` a row (hard links to 8 files: a warm inode cache; a real release's "
        "million files, or network storage, cost more)",
        "{lengths_from_sizes_seconds:.2f} s",
    ),
]
# data.augment at its most expensive: every clip resampled (two factors of three) and noised.
AUGMENT = AudioAugment(speed_factors=[0.9, 1.0, 1.1], noise_prob=1.0)


def throughput(model: str, root: str, workers: int, batches: int, augment: AudioAugment | None = None) -> dict:
    dm = SpeechDataModule(
        path=root,
        model=model,
        language="mr",
        train_split="train",
        batch_size=8,
        num_workers=0,
        augment=augment or AudioAugment(),
    )
    dm.setup("fit")
    dataset = dm.datasets["train"]
    n = min(len(dataset), 64)
    start = time.perf_counter()
    for i in range(n):
        dataset[(i, 0) if augment else i]
    single = n / (time.perf_counter() - start)
    dm.hparams.num_workers = workers
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # workers started
    start, clips = time.perf_counter(), 0
    for _, batch in zip(range(batches), it):
        clips += len(batch["paths"])
    return {
        "one_process_clips_per_s": single,
        "loader_clips_per_s": clips / (time.perf_counter() - start),
        "workers": workers,
    }


def validation_batch(model: str, clips: int = 256) -> dict:
    """What a validation loop waits for before its first decode, and what it does after each one.

    A DataLoader worker builds a whole batch, so the loop's first batch of ``clips`` clips comes from
    one process: its decode + features time in one process (best of three), with ``log_mel`` and with
    the extractor's full 30 s window (the path before ``log_mel``), then the loader's own first batch, on the speed benchmark's clips (16 kHz wav,
    2-10 s). Then the host work after a decode: texts, normalisation, degeneracy and error rates
    for ``clips`` rows of 96 random tokens (a model that never stops early).
    """
    import torch

    from benchmarks.speed import make_clips
    from lightning_asr.data.audio import log_mel, read_clip
    from lightning_asr.model.metrics import CharErrorRate, WordErrorRate
    from lightning_asr.text import clean_transcript, is_degenerate, normalize

    work = Path(tempfile.mkdtemp())
    manifest, _ = make_clips(work / "clips", clips)
    full = lambda extractor, waveform: extractor(waveform, sampling_rate=16000, return_tensors="np").input_features[0]  # noqa: E731
    dm = SpeechDataModule(
        source="manifest",
        path=str(manifest),
        model=model,
        language="mr",
        eval_batch_size=clips,
        num_workers=0,
        trim_encoder=True,
    )
    dm.setup("validate")
    extractor, paths = dm.processor.feature_extractor, dm.datasets["val"].rows["audio"].to_pylist()
    seconds = {}
    for name, features in [("full_window", full), ("log_mel", log_mel)] * 3:  # alternating; the best of three each
        start = time.perf_counter()
        [features(extractor, read_clip(path, path)) for path in paths]  # what a worker does per clip
        seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - start)
    start = time.perf_counter()
    next(iter(dm.val_dataloader()))  # the whole first batch, collation included, through the loader
    seconds["loader"] = time.perf_counter() - start
    tokenizer = dm.processor.tokenizer
    ids = torch.randint(0, 50257, (clips, 96), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    texts = [clean_transcript(t) for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    special = set(tokenizer.all_special_ids)
    [is_degenerate([t for t in row.tolist() if t not in special], 96) for row in ids]
    refs = texts[::-1]
    WordErrorRate().update(texts, refs)
    norm_texts, norm_refs = [normalize(t) for t in texts], [normalize(r) for r in refs]  # once, as the module does
    WordErrorRate().update(norm_texts, norm_refs)
    CharErrorRate().update(norm_texts, norm_refs)
    post = time.perf_counter() - start
    shutil.rmtree(work)
    return {
        "clips": clips,
        "first_batch_full_window_s": seconds["full_window"],
        "first_batch_log_mel_s": seconds["log_mel"],
        "first_batch_loader_s": seconds["loader"],
        "post_processing_s": post,
    }


def index_cost(model: str, clips_dir: Path, rows: int) -> dict:
    root = Path(tempfile.mkdtemp()) / "big"
    clips = root / "mr" / "clips"
    clips.mkdir(parents=True)
    real = sorted(p.name for p in clips_dir.glob("*.mp3"))[:8]
    for name in real:
        shutil.copy(clips_dir / name, clips / name)
    # A release lists each clip once (repeats are dropped as duplicates): one distinct name a row,
    # each a hard link to a copy of one of the 8 real clips, so every row has a file to stat.
    names = [f"r{i:07d}_{real[i % len(real)]}" for i in range(rows)]
    for i, name in enumerate(names):
        source = clips / f"s{i // 60000}_{real[i % len(real)]}"  # a file takes at most 65,000 links
        if not source.exists():
            shutil.copy(clips / real[i % len(real)], source)
        os.link(source, clips / name)
    sentence = "यातील बरीचशी लेणी वरपासून सुरू करून खालपर्यंत कोरीवकाम करीत निर्मिलेली आहेत."
    with open(root / "mr" / "train.tsv", "w") as f:
        f.write(HEADER + "\n")
        for name in names:
            f.write(f"{'a' * 128}\t{name}\t{'b' * 64}\t{sentence}\t\t2\t0\t\t\t\t\tmr\t\n")
    (root / "mr" / "test.tsv").write_text(HEADER + "\n" + f"c\t{real[0]}\ts\t{sentence}\t\t2\t0\t\t\t\t\tmr\t\n")
    durations = root / "mr" / "clip_durations.tsv"
    durations.write_text(
        "clip\tduration[ms]\n" + "".join(f"{name}\t{5000 + i % 997}\n" for i, name in enumerate(names))
    )
    # Then the lengths group_by_length needs, both ways: from clip_durations.tsv, and from file sizes.
    code = (
        f"import time, resource, sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from lightning_asr.data import SpeechDataModule\nfrom lightning_asr.data.sources import clip_lengths\n"
        f"dm = SpeechDataModule(path={str(root)!r}, model={model!r}, language='mr', train_split='train', num_workers=0)\n"
        "t = time.perf_counter(); dm.setup('fit'); s = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\n"
        "rows = dm.datasets['train'].rows\n"
        f"t = time.perf_counter(); clip_lengths(rows, Path({str(durations)!r})); d = time.perf_counter() - t\n"
        "t = time.perf_counter(); clip_lengths(rows); z = time.perf_counter() - t\n"
        "print(s, rss, len(dm.datasets['train']), d, z)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    shutil.rmtree(root)
    return {
        "rows": int(out[2]),
        "setup_seconds": float(out[0]),
        "peak_rss_gib": float(out[1]),
        "lengths_from_durations_seconds": float(out[3]),
        "lengths_from_sizes_seconds": float(out[4]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=str(REPO.parent / "shared/data/cv-synth"), help="a Common Voice root with mr/"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    parser.add_argument("--only", nargs="*", choices=PARTS, default=PARTS, help="measure only these parts")
    parser.add_argument("--validation-clips", type=int, default=256)
    args = parser.parse_args()
    if not Path(args.data, "mr").is_dir():
        args.data = str(REPO / "demo" / "common_voice")
    model = processor_folder()
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": datetime.date.today().isoformat(),
        "data": args.data,
    }
    if "throughput" in args.only:
        report["throughput"] = throughput(model, args.data, args.workers, args.batches)
        report["throughput_augmented"] = throughput(model, args.data, args.workers, args.batches, AUGMENT)
    if "index" in args.only:
        report["index"] = index_cost(model, Path(args.data) / "mr" / "clips", args.rows)
    # After the index: Linux keeps a process's peak RSS across fork + exec, so the index's child
    # would report this process's larger peak as its own.
    if "validation" in args.only:
        report["validation"] = validation_batch(model, args.validation_clips)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / "data"
    write_json(stem.with_suffix(".json"), report)
    lines = [
        f"# Data path: {report['machine']}, {report['date']}",
        "",
        f"Command: `python -m benchmarks.data_throughput` (clips from {args.data}: 48 kHz MP3, 30 s log-mel).",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    lines += [
        f"| {label.format(**report[part])} | {value.format(**report[part])} |"
        for part, label, value in ROWS
        if part in report
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
