import json
import subprocess
import sys

from benchmarks.speed import DECODES
from tests.conftest import REPO


def test_speed_benchmark_runs_every_path_on_cpu(tmp_path):
    """benchmarks/speed.py --tiny: the recipe (HF Trainer), our modes and decoding, on a tiny model."""
    subprocess.run([sys.executable, str(REPO / "benchmarks/speed.py"), "--tiny", "--work", str(tmp_path / "work"),
                    "--results", str(tmp_path), "--modes", "ours-recipe", "bf16-trim-gc-b64"], check=True, cwd=tmp_path,
                   capture_output=True)
    report = json.loads(next(tmp_path.glob("speed-*-tiny.json")).read_text())
    assert set(report["train"]) == {"recipe", "ours-recipe", "bf16-trim-gc-b64"} and "errors" not in report
    assert all(row["samples_per_s"] > 0 for row in report["train"].values())
    assert len(report["decode"]) == len(DECODES)  # the recipe's, ours with generate() and static, merged or not
    assert all(row["clips"] > 0 and row["seconds"] > 0 for row in report["decode"].values())
    # The data waits are part of the loop, the first batch's (workers starting) among them.
    assert all(0 < row["first_batch_wait_s"] <= row["data_wait_s"] < row["seconds"] for row in report["decode"].values())
    assert all(row["profile"]["wall_ms"] > 0 for name, row in report["train"].items() if name != "recipe")
    assert all(row["profile"]["wall_ms"] > 0 and len(row["batch_s"]) == (1 if "recipe" in name else 2)
               for name, row in report["decode"].items())
    assert (tmp_path / next(tmp_path.glob("speed-*-tiny.json")).name.replace(".json", ".md")).is_file()
    # A run split over two GPUs merges back into one report, the recipe first.
    parts = []
    for i, names in enumerate([["ours-recipe"], ["recipe", "bf16-trim-gc-b64"]]):
        part = report | {"train": {n: report["train"][n] for n in names}, "decode": {} if i else report["decode"]}
        parts.append(tmp_path / f"part{i}.json")
        parts[-1].write_text(json.dumps(part))
    subprocess.run([sys.executable, str(REPO / "benchmarks/speed.py"), "--merge", *map(str, parts), "--results",
                    str(tmp_path / "merged")], check=True, cwd=tmp_path, capture_output=True)
    merged = json.loads(next((tmp_path / "merged").glob("speed-*.json")).read_text())
    assert list(merged["train"]) == ["recipe", "ours-recipe", "bf16-trim-gc-b64"] and merged["decode"] == report["decode"]


def test_data_benchmark_times_both_feature_paths_and_restores_log_mel():
    import lightning_asr.data as data_lib
    from benchmarks.data_throughput import processor_folder, validation_batch

    kept = data_lib.log_mel
    row = validation_batch(processor_folder(), clips=8)
    assert data_lib.log_mel is kept  # the full-window baseline was swapped in only for its timing
    assert row["clips"] == 8 and min(row["first_batch_full_window_s"], row["first_batch_log_mel_s"], row["post_processing_s"]) > 0
