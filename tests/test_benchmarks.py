import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

# benchmarks/ is not installed: `python -m benchmarks.<name>` from another folder finds it on the path.
MODULES = os.environ | {"PYTHONPATH": str(REPO)}
# The benchmark scripts' CPU smoke runs: `make test-benchmarks` (CI runs them after the default suite).
pytestmark = pytest.mark.benchmarks


# One decode per code path: generate() and static, merged or not, bf16 / int8 / nf4 bases, trimmed or
# 30 s windows, one batch or two (the other DECODES entries differ only in batch size).
DECODE_PATHS = [
    "recipe",
    "bf16-merged-b128",
    "bf16-static-b256",
    "bf16-static-merged-b256",
    "bf16-static-b256-untrimmed",
    "int8-static-b64",
    "nf4-b64",
    "nf4-static-b8",
    "nf4-static-b2-untrimmed-eager",
]


def test_decode_entries_have_distinct_titles():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--list-decodes"],
        check=True,
        capture_output=True,
        text=True,
        env=MODULES,
    ).stdout
    titles = json.loads(out)
    assert set(DECODE_PATHS) < set(titles) and len(set(titles.values())) == len(titles)


def test_speed_benchmark_runs_every_path_on_cpu(tmp_path):
    """benchmarks/speed.py --tiny: the recipe (HF Trainer), our modes and decoding, on a tiny model."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "--tiny",
            "--work",
            str(tmp_path / "work"),
            "--results",
            str(tmp_path),
            "--modes",
            "ours-recipe",
            "ours-recipe-packed",
            "--decode",
            *DECODE_PATHS,
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        env=MODULES,
    )
    report = json.loads(next(tmp_path.glob("speed-tiny.json")).read_text())
    assert set(report["train"]) == {"recipe", "ours-recipe", "ours-recipe-packed"} and "errors" not in report
    assert all(row["samples_per_s"] > 0 for row in report["train"].values())
    # Packed windows (data.pack_share 0.5) count their clips as samples.
    assert (
        report["train"]["ours-recipe"]["clips_per_window"]
        == 1
        < report["train"]["ours-recipe-packed"]["clips_per_window"]
    )
    # Each row names the shipped config it measures, its WER verdict from quality.json, and an MFU
    # against the matrix-product peak measured in the same run.
    ours = report["train"]["ours-recipe"]
    assert ours["config"] == "whisper-large-v2-int8-mr" and isinstance(ours["wer_within_bound"], bool)
    packed = report["train"]["ours-recipe-packed"]  # its verdict comes from quality-packed.json
    assert (
        packed["config"] == "packed"
        and isinstance(packed["wer_within_bound"], bool)
        and report["peak_matmul_flops"] > 0
    )
    assert all(0 < row["mfu"] < 1 for name, row in report["train"].items() if name != "recipe")
    assert list(report["decode"]) == DECODE_PATHS and len({row["title"] for row in report["decode"].values()}) == len(
        DECODE_PATHS
    )
    assert all(row["clips"] > 0 and row["seconds"] > 0 for row in report["decode"].values())
    # The data waits are part of the loop, the first batch's (workers starting) among them.
    assert all(
        0 < row["first_batch_wait_s"] <= row["data_wait_s"] < row["seconds"] for row in report["decode"].values()
    )
    assert all(row["profile"]["wall_ms"] > 0 for name, row in report["train"].items() if name != "recipe")
    # --tiny decodes in batches of 8; where there are two, the second one is profiled
    assert all(
        row["profile"]["wall_ms"] > 0 and len(row["batch_s"]) == -(-row["clips"] // 8)
        for row in report["decode"].values()
    )
    assert any(len(row["batch_s"]) == 2 for row in report["decode"].values())
    # The report names the command that made it, as typed (every number names its command).
    command = "python -m benchmarks.speed --tiny --work"
    assert report["command"].startswith(command) and "--modes ours-recipe ours-recipe-packed" in report["command"]
    assert command in (tmp_path / "speed-tiny.md").read_text()
    # A run split over two GPUs merges back into one report, the recipe first.
    parts = []
    for i, names in enumerate([["ours-recipe"], ["recipe", "ours-recipe-packed"]]):
        part = report | {"train": {n: report["train"][n] for n in names}, "decode": {} if i else report["decode"]}
        parts.append(tmp_path / f"part{i}.json")
        parts[-1].write_text(json.dumps(part))
    subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--merge", *map(str, parts), "--results", str(tmp_path / "merged")],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        env=MODULES,
    )
    merged = json.loads(next((tmp_path / "merged").glob("speed.json")).read_text())
    assert (
        list(merged["train"]) == ["recipe", "ours-recipe", "ours-recipe-packed"]
        and merged["decode"] == report["decode"]
    )


def test_data_benchmark_times_both_feature_paths(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.data_throughput",
            "--only",
            "validation",
            "--validation-clips",
            "8",
            "--results",
            str(tmp_path),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        env=MODULES,
    )
    row = json.loads(next(tmp_path.glob("data.json")).read_text())["validation"]
    assert (
        row["clips"] == 8
        and min(row["first_batch_full_window_s"], row["first_batch_log_mel_s"], row["post_processing_s"]) > 0
    )
    assert row["first_batch_loader_s"] > 0


def test_ddp_benchmark_trains_and_validates_on_two_cpu_processes(tmp_path):
    """benchmarks/ddp.py --tiny: DDP training and DDP validation (static decoding, LoRA merged) over gloo;
    30 s windows, so a clip decodes the same in any batch: the synchronised rates match one process's."""
    script = [
        sys.executable,
        "-m",
        "benchmarks.ddp",
        "--tiny",
        "--work",
        str(tmp_path / "work"),
        "--mode",
        "bf16-gc-b32-compile",
    ]
    for extra in (
        ["--devices", "2"],
        ["--devices", "2", "--validate-clips", "24", "--eval-batch", "8"],
        ["--devices", "1", "--validate-clips", "24", "--eval-batch", "8"],
    ):
        subprocess.run(script + extra, check=True, cwd=tmp_path, capture_output=True, env=MODULES)
    subprocess.run(
        script + ["--report", "--results", str(tmp_path)], check=True, cwd=tmp_path, capture_output=True, env=MODULES
    )
    rows = json.loads(next(tmp_path.glob("ddp.json")).read_text())
    fit, two, one = rows
    assert fit["devices"] == 2 and fit["samples_per_s"] > 0 and "kind" not in fit
    assert (two["kind"], two["devices"], one["devices"]) == ("validate", 2, 1)
    for name in ("val/wer", "val/cer"):
        assert two[name] == pytest.approx(one[name], abs=1e-6) and two[name] > 0
    assert "| bf16-gc-b32-compile | 2 | 8 | 24 |" in next(tmp_path.glob("ddp.md")).read_text()


def test_quality_benchmark_trains_scores_and_compares_on_cpu(tmp_path):
    """The whole path of benchmarks/quality.py: a config (here a candidate from benchmarks/configs/, fast-bf16
    with some 30 s batches) and the guide's recipe, per-clip
    scores, the paired bootstrap, the retained language (one seed here; the bootstrap over seeds
    has its own test)."""
    import shutil

    from tests.conftest import write_common_voice

    data = tmp_path / "data"
    write_common_voice(data / "cv-synth", rows_per_split=4)
    write_common_voice(tmp_path / "en", rows_per_split=2)
    shutil.move(tmp_path / "en" / "mr", data / "cv-synth" / "en")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.quality",
            "--tiny",
            "--tasks",
            "cv-synth-mr",
            "--configs",
            "trim-safe-bf16",
            "--seeds",
            "1",
            "--jobs",
            "2",
            "--data-dir",
            str(data),
            "--work",
            str(tmp_path / "work"),
            "--results",
            str(tmp_path),
            "--name",
            "q",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "q.json").read_text())
    task = report["tasks"]["cv-synth-mr"]
    assert set(task["runs"]) == {"recipe", "trim-safe-bf16"} and set(task["runs"]["recipe"]) == {"1"}
    run = task["runs"]["trim-safe-bf16"]["1"]
    assert len(run["clip_errors"]) == run["clips"] == 4 and "retained" in run
    # The zero-shot is scored while the runs train (a --collect meanwhile then finds it cached), so before any
    # adapter: scoring is one at a time, and the zero-shot takes its turn before the first run has trained.
    scored = [p.stat().st_mtime for p in (tmp_path / "work").glob("cv-synth-mr/*/seed1/**/scores.json")]
    assert len(scored) == 2 and (tmp_path / "work/cv-synth-mr/zero-shot.json").stat().st_mtime < min(scored)
    summary = task["summary"]["trim-safe-bf16"]
    low, high = summary["diff_ci95"]
    assert low <= summary["diff"] <= high and isinstance(summary["within_bound"], bool)
    table = (tmp_path / "q.md").read_text()
    assert (
        "| the guide's recipe (seed_recipe.py) |" in table and "| `trim-safe-bf16` |" in table and "retained" in table
    )

    # A device session that ended early: --collect reports what was scored and names what was not;
    # --reuse takes an earlier report's runs instead of training them.
    base = [
        sys.executable,
        "-m",
        "benchmarks.quality",
        "--tiny",
        "--tasks",
        "cv-synth-mr",
        "--seeds",
        "1",
        "--data-dir",
        str(data),
        "--results",
        str(tmp_path),
    ]
    collect = subprocess.run(
        [
            *base,
            "--configs",
            "trim-safe-bf16",
            "recipe-unquantized",
            "--collect",
            "--work",
            str(tmp_path / "work"),
            "--name",
            "c",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert collect.returncode == 0, collect.stderr[-3000:]
    collected = json.loads((tmp_path / "c.json").read_text())
    assert collected["tasks"]["cv-synth-mr"]["runs"]["trim-safe-bf16"]["1"]["clip_errors"] == run["clip_errors"]
    assert collected["not_run"] == [["cv-synth-mr", "recipe-unquantized", 1]]
    assert (
        "Not run (the device session ended first): cv-synth-mr/recipe-unquantized seed 1."
        in (tmp_path / "c.md").read_text()
    )
    reused = subprocess.run(
        [
            *base,
            "--configs",
            "trim-safe-bf16",
            "--collect",
            "--reuse",
            str(tmp_path / "q.json"),
            "--work",
            str(tmp_path / "empty"),
            "--name",
            "r",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert reused.returncode == 0, reused.stderr[-3000:]
    again = json.loads((tmp_path / "r.json").read_text())["tasks"]["cv-synth-mr"]
    assert again["summary"]["trim-safe-bf16"]["diff"] == summary["diff"]
    assert "Runs taken from" in (tmp_path / "r.md").read_text()
    # Any run can be the baseline: the recipe against trim-safe-bf16 is the same difference, negated.
    flipped = subprocess.run(
        [
            *base,
            "--configs",
            "recipe",
            "--baseline",
            "trim-safe-bf16",
            "--collect",
            "--work",
            str(tmp_path / "work"),
            "--name",
            "b",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert flipped.returncode == 0, flipped.stderr[-3000:]
    against = json.loads((tmp_path / "b.json").read_text())["tasks"]["cv-synth-mr"]["summary"]
    assert against["recipe"]["diff"] == pytest.approx(-summary["diff"]) and "diff" not in against["trim-safe-bf16"]
    assert "− trim-safe-bf16, points" in (tmp_path / "b.md").read_text()


def test_quality_override_reaches_every_config_run_and_keeps_reports_apart(tmp_path, monkeypatch):
    """--override (the 900-step augmentation runs on an unquantized base): the argument comes last in every
    config's fit command, a report trained without it is not reused, and the guide's recipe refuses it."""
    import benchmarks.quality as quality

    commands = []
    monkeypatch.setattr(quality, "train_once", lambda args, out, adapter: commands.append(args) or {})
    quality.fit_config("noise", "base", "fsdd-en", tmp_path, {"steps": 900}, 7, False, ["--model.quantization=none"])
    assert commands[0][-1] == "--model.quantization=none" and "--data.augment.noise_prob=0.5" in commands[0]
    assert "--trainer.max_steps=900" in commands[0]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"steps": 900, "tasks": {}}))  # a report from before --override existed
    assert quality.reuse(str(earlier), {"steps": 900}, []) == {}
    with pytest.raises(SystemExit, match=r"--override \[\], not \['--model.quantization=none'\]"):
        quality.reuse(str(earlier), {"steps": 900}, ["--model.quantization=none"])
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.quality",
            "--tiny",
            "--configs",
            "noise",
            "--override=--model.quantization=none",
            "--collect",
            "--work",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 2 and "--override changes the configs' runs, not the guide's recipe" in refused.stderr


def test_quality_harness_measures_every_shipped_config_by_its_file(tmp_path, monkeypatch):
    """A config added to configs/ (packed.yaml) is a --configs choice and trains from its own file, not a look-alike."""
    import benchmarks.quality as quality

    assert {"packed", "augment", "fast-bf16"} <= set(quality.CONFIGS) and not {"demo", "ddp"} & set(quality.CONFIGS)
    commands = []
    monkeypatch.setattr(quality, "train_once", lambda args, out, adapter: commands.append(args) or {})
    quality.fit_config("packed", "base", "fsdd-en", tmp_path, {"epochs": 3}, 7, False)
    assert str(REPO / "configs/packed.yaml") in commands[0] and not any("pack_share" in arg for arg in commands[0])
    # Equal data by default: the guide's 3 epochs for every config, whatever its batch; the recipe (seed_recipe.py) too.
    assert {"--trainer.max_epochs=3", "--trainer.max_steps=-1"} <= set(commands[0])
    quality.fit_recipe("base", "fsdd-en", tmp_path, {"epochs": 3}, 7, False)
    assert "--epochs=3" in commands[1] and not any(arg.startswith("--max-steps") for arg in commands[1])
    # The choice is accepted (the run is then refused for --override beside the guide's recipe, exit 2, nothing trained).
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.quality",
            "--tiny",
            "--configs",
            "packed",
            "--override=--model.quantization=none",
            "--collect",
            "--work",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 2 and "--override changes the configs' runs" in refused.stderr


def test_timestamp_benchmark_packs_windows_with_known_boundaries_and_scores_them(tmp_path):
    """benchmarks/timestamps.py on a tiny random 30 s Whisper: windows of 2-4 demo clips with their
    boundaries, each model's ``transcribe --timestamps`` rows, one report row per model."""
    import soundfile as sf
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    from tests.conftest import write_tiny_model

    base = write_tiny_model(tmp_path / "w30", max_source_positions=1500)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), WhisperTokenizer.from_pretrained(base)).save_pretrained(
        base
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.timestamps",
            "--base",
            str(base),
            "--data",
            str(REPO / "demo/common_voice/mr"),
            "--language",
            "mr",
            "--model",
            "zero-shot=",
            "--windows",
            "2",
            "--max-new-tokens",
            "6",
            "--work",
            str(tmp_path / "work"),
            "--results",
            str(tmp_path),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        env=MODULES,
    )
    report = json.loads((tmp_path / "timestamps.json").read_text())
    row = report["models"]["zero-shot"]
    assert row["windows"] == 2 and 4 <= row["clips"] <= 8 and 0 <= row["within_0.5_s"] <= 1
    windows = sorted((tmp_path / "work/windows").glob("*.wav"))
    assert len(windows) == 2 and all(sf.info(w).duration <= 28.0 for w in windows)
    assert "| zero-shot |" in (tmp_path / "timestamps.md").read_text() and report["max_new_tokens"] == 6


def test_timestamps_scores_boundaries_and_words_segment_by_segment():
    """Predicted segments are normalised one by one, as the clips are: Whisper's English normaliser
    joins "seven eight" into 78, which would count a right two-digit transcript as wrong."""
    from benchmarks.timestamps import score

    windows = [{"clips": [{"start": 0.0, "end": 0.6, "text": "seven"}, {"start": 1.0, "end": 1.5, "text": "eight"}]}]
    rows = [
        {
            "text": "seven eight",
            "segments": [{"start": 0.0, "end": 0.62, "text": "seven"}, {"start": 1.1, "end": 1.5, "text": "eight"}],
        }
    ]
    result = score(windows, rows, "English")
    assert result["wer_norm"] == 0.0 and result["within_0.5_s"] == 1.0 and result["segments_per_clip"] == 1.0
    assert result["boundary_median_s"] == pytest.approx(0.01, abs=1e-6)  # edges 0, 0.02, 0.1, 0
    missed = score(windows, [{"text": "seven eight", "segments": []}], "English")
    assert missed["windows_without_segments"] == 1 and missed["within_0.5_s"] == 0.0


def test_device_jobs_name_modes_decodes_and_configs_that_exist():
    """benchmarks/device.sh's JOBS run on a lent GPU, where a misspelt mode costs device minutes: every name after
    --modes, --decode and --configs is one the scripts accept."""
    from benchmarks import quality, speed, tta

    known = {
        "--modes": {m.name for m in speed.MODES},
        "--decode": set(speed.DECODES),
        "--configs": {"recipe", *quality.CONFIGS, *quality.CANDIDATES, *quality.VARIANTS},
        "--runs": set(tta.RUNS),
    }
    script = (REPO / "benchmarks/device.sh").read_text()
    words = (
        script[script.index("JOBS=(") + 6 : script.index("\n)\nAFTER=(")].replace(";", " ").replace('"', " ").split()
    )
    named, flag = [], None
    for word in words:
        flag = word if word in known else None if word.startswith("--") else flag
        if flag and word != flag:
            named.append((flag, word))
    # The parse saw at least one flag with names after it (a speed job may decode nothing: an empty --decode).
    assert named and {word for word in words if word in known}
    assert [(flag, name) for flag, name in named if name not in known[flag]] == []


def tta_data(root):
    """Both tasks' folders in Common Voice layout, clips of 1-4 s (the demo model's window is 4 s)."""
    import shutil

    from tests.conftest import write_common_voice

    write_common_voice(root / "cv-synth", rows_per_split=4)
    write_common_voice(root / "digits", rows_per_split=4)
    (root / "real/fsdd-takes5-49").mkdir(parents=True)
    shutil.move(root / "digits" / "mr", root / "real/fsdd-takes5-49/en")
    return root


def test_tta_benchmark_trains_to_the_recipes_target_scores_and_projects_on_cpu(tmp_path):
    """benchmarks/tta.py --tiny: the recipe sets the target at the end of its schedule, a lever's run is read off its
    validations, the adapter at the target is scored on test, and the time is projected from a speed report."""
    data = tta_data(tmp_path / "data")
    speed = tmp_path / "speed.json"  # the recipe at 4 clips/s; packed-dense-bf16 at 60 clips/s, 3 clips a window
    speed.write_text(
        json.dumps(
            {
                "machine": "GPU",
                "commit": "abc",
                "train": {
                    "recipe": {"samples_per_s": 4.0},
                    "m": {"config": "packed-dense-bf16", "samples_per_s": 60.0, "clips_per_window": 3.0},
                },
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "benchmarks.tta",
        "--tiny",
        "--tasks",
        "cv-synth-mr",
        "--runs",
        "packed-dense-bf16-loraplus",
        "--seeds",
        "1",
        "--jobs",
        "2",
        "--data-dir",
        str(data),
        "--work",
        str(tmp_path / "work"),
        "--results",
        str(tmp_path),
        "--speed",
        str(speed),
    ]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "tta-tiny.json").read_text())
    task = report["tasks"]["cv-synth-mr"]
    recipe, lever = task["runs"]["recipe-config"]["1"], task["runs"]["packed-dense-bf16-loraplus"]["1"]
    # The guide's schedule: 3 epochs of the 4 training clips at batch 8 are 3 steps, validated after each.
    assert [row["step"] for row in recipe["trajectory"]] == [1, 2, 3] and recipe["trajectory"][-1]["windows"] == 12
    assert task["target"] == pytest.approx(recipe["trajectory"][-1]["val"]["wer_norm"] + 0.005)
    # Windows are rows; a packed window holds several clips.
    assert all(r["clips"] >= r["windows"] > 0 and r["train_s"] > 0 for r in lever["trajectory"])
    for run in (recipe, lever):
        hit = run["hit"]
        assert hit == next((r for r in run["trajectory"] if r["val"]["wer_norm"] <= task["target"]), hit)
        assert len(run["test"]["clip_errors"]) == run["test"]["clips"] == 4
        assert (
            tmp_path / f"work/cv-synth-mr/{'recipe-config' if run is recipe else 'packed-dense-bf16-loraplus'}"
            f"/seed1/adapters/step-{hit['step']}/test-scores.json"
        ).is_file()
    row = task["summary"]["packed-dense-bf16-loraplus"]
    if row["all"]:  # the projection: windows × seconds per window, against the recipe's in the same report
        expected = (recipe["hit"]["windows"] / 4.0) / (lever["hit"]["windows"] * 3.0 / 60.0)
        assert row["projected_vs_recipe"] == pytest.approx(expected)
    assert "| `packed-dense-bf16-loraplus` |" in (tmp_path / "tta-tiny.md").read_text()
    # --collect reports what --work holds, training and scoring nothing.
    collected = subprocess.run(
        [*command, "--collect", "--name", "c"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert json.loads((tmp_path / "c.json").read_text())["tasks"]["cv-synth-mr"]["summary"] == task["summary"]


def test_tta_schedule_validates_at_the_runs_last_step():
    """The validation interval divides the run where one near the wanted interval does; else the run is lengthened."""
    from benchmarks.tta import schedule

    assert schedule(400, 3, 8, 100) == (150, 15)  # the guide on 400 clips: 150 steps, validated every 120 windows
    steps, every = schedule(2100, 3, 8, 525)  # 789 steps have no divisor near 66: the run takes 3 more
    assert (steps, every) == (792, 66) and steps % every == 0
    assert schedule(8, 3, 8, 2) == (3, 1)


def test_tta_target_rule_and_projection():
    from benchmarks.tta import first_at, summarise

    rows = [
        {"step": s, "windows": 8 * s, "clips": 8 * s, "train_s": float(s), "val": {"wer_norm": w}}
        for s, w in [(10, 0.9), (20, 0.6), (30, 0.62)]
    ]
    assert first_at(rows, 0.61, recipe=False)["step"] == 20
    assert first_at(rows, 0.5, recipe=False) is None and first_at(rows, 0.5, recipe=True)["step"] == 30
    fast = [
        {"step": s, "windows": 32 * s, "clips": 96 * s, "train_s": s / 2, "val": {"wer_norm": w}}
        for s, w in [(2, 0.8), (4, 0.55)]
    ]
    runs = {
        "recipe-config": {"7": {"trajectory": rows, "hit": rows[1]}},
        "packed-dense-bf16-lr2e-3": {"7": {"trajectory": fast, "hit": fast[1]}},
    }
    speed = {
        "recipe": {"s_per_window": 0.25, "recipe_s_per_window": 0.25, "report": "r"},
        "packed-dense-bf16": {"s_per_window": 0.05, "recipe_s_per_window": 0.25, "report": "r"},
    }
    row = summarise(runs, speed)["packed-dense-bf16-lr2e-3"]
    # 160 recipe windows at 0.25 s against 128 windows at 0.05 s: 6.25x; measured 20 s against 2 s.
    assert row["projected_vs_recipe"] == pytest.approx(160 * 0.25 / (128 * 0.05))
    assert row["measured_vs_recipe"] == pytest.approx(10.0) and row["best_dev"] == pytest.approx(0.55)


def test_speed_modes_read_their_configs_as_the_command_does(capsys):
    """benchmarks/modes.py merges a mode's YAML over the recipe itself: each mode's knobs equal what
    ``lightning-asr fit --config recipe --config BASE --print_config`` gives, overrides typed as flags."""
    from benchmarks.modes import MODES, RECIPE
    from tests.test_cli import printed_config

    checked = 0
    for mode in MODES:
        folder = REPO / "configs" if (REPO / "configs" / f"{mode.base}.yaml").is_file() else REPO / "benchmarks/configs"
        configs = [REPO / "configs" / f"{RECIPE}.yaml"] + (
            [folder / f"{mode.base}.yaml"] if mode.base != RECIPE else []
        )
        flags = tuple(
            arg
            for key, value in mode.overrides.items()
            for arg in (f"--{key}", yaml.safe_dump(value).strip().removesuffix("\n..."))
        )
        printed = printed_config(capsys, *configs, args=flags)
        speed, data = printed["model"]["speed"], printed["data"]
        assert (mode.quantization, mode.batch_size, mode.precision, mode.group) == (
            printed["model"]["quantization"],
            data["batch_size"],
            printed["trainer"]["precision"],
            data["group_by_length"],
        ), mode.name
        assert (
            mode.gradient_checkpointing,
            mode.trim_encoder,
            mode.compile,
            mode.cudnn_attention,
            mode.offload,
            mode.fp8,
        ) == (
            speed["gradient_checkpointing"],
            speed["trim_encoder"],
            speed["compile"],
            speed["cudnn_attention"],
            speed["offload_encoder"],
            speed["fp8"],
        ), mode.name
        assert (mode.frozen_encoder, mode.pack_share, mode.pack_clips) == (
            not printed["model"]["lora"]["encoder"],
            data["pack_share"],
            tuple(data["pack_clips"]),
        ), mode.name
        checked += 1
    assert checked == len(MODES) > 40


def test_the_forgetting_levers_train_and_are_scored_against_the_recipe_config(tmp_path):
    """benchmarks/forgetting.py through benchmarks.quality: replay (data.sources with the retained set in English)
    and no-speech (data.no_speech.share) against recipe-config, each adapter scored on the target, the retained set
    and generated non-speech clips, with paired intervals."""
    import shutil

    from tests.conftest import write_common_voice

    data = tmp_path / "data"
    write_common_voice(data / "cv-synth", rows_per_split=4)
    write_common_voice(tmp_path / "en", rows_per_split=2)
    shutil.move(tmp_path / "en" / "mr", data / "cv-synth" / "en")
    command = [sys.executable, "-m", "benchmarks.quality", "--tiny", "--tasks", "cv-synth-mr", "--seeds", "1", "2"]
    command += ["--configs", "recipe-config", "replay", "no-speech", "--baseline", "recipe-config", "--jobs", "2"]
    command += ["--data-dir", str(data), "--work", str(tmp_path / "work"), "--results", str(tmp_path), "--name", "f"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    task = json.loads((tmp_path / "f.json").read_text())["tasks"]["cv-synth-mr"]
    replayed = task["runs"]["replay"]["1"]
    assert {"retained", "no_speech"} <= set(replayed) and replayed["no_speech"]["clips"] == 6
    assert set(replayed["no_speech"]["clip_words"]) <= {0, 1}
    # replay's fit drew both sources: its log names the English one.
    fit_log = (tmp_path / "work/cv-synth-mr/replay/seed1/fit.log").read_text()
    assert "data: train 6 rows, val/target 4 rows" in fit_log  # 4 Marathi and 2 English clips, weighted 2:1
    table = (tmp_path / "f.md").read_text()
    assert "| zero-shot base |" in table and "| `replay` |" in table and "| `no-speech` |" in table


def test_the_zero_shot_non_speech_report_scores_each_language(tmp_path):
    """``python -m benchmarks.forgetting``: the base alone on generated non-speech clips, a row per language."""
    command = [sys.executable, "-m", "benchmarks.forgetting", "--model", str(REPO / "demo/whisper-tiny-random")]
    command += ["--from-config", "--languages", "Marathi", "English", "--clips", "3", "--results", str(tmp_path)]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "forgetting-zero-shot.json").read_text())
    assert report["Marathi"]["clips"] == 3 and set(report["English"]["per_kind"]) == {"silence", "noise", "music"}
    table = (tmp_path / "forgetting-zero-shot.md").read_text()
    assert "| Marathi |" in table and "| English |" in table
