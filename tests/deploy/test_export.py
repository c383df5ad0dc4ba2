"""``lightning-asr export`` to transformers and CTranslate2 (faster-whisper), and its WER parity check."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, demo_args, run

CLIPS = REPO / "demo" / "common_voice" / "mr"
# A tiny random base at init_seed 0 writes words ("residue …"), not byte fragments: WER needs words.
SHORT = ["--max_new_tokens", "8", "--num_workers", "0"]


@pytest.fixture(scope="module")
def adapter30(tmp_path_factory, whisper30) -> Path:
    """An adapter on a tiny random base with Whisper's 30 s window (faster-whisper pads every input to
    30 s), trained by the demo command for a few steps."""
    tmp = tmp_path_factory.mktemp("export-fit")
    run(
        demo_args(
            tmp,
            f"--model.model={whisper30}",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--data.max_samples=4",
            "--model.decoding.max_new_tokens=8",
            "--model.validate_before_training=false",
        ),
        tmp,
    )
    return tmp / "adapters" / "last"


@pytest.fixture(scope="module")
def own_words(tmp_path_factory, adapter30) -> Path:
    """The demo clips labelled with what the adapter itself transcribes (``lightning-asr transcribe``):
    the adapter scores 0 % on them, so any decode that differs in the exported model shows as WER."""
    tmp = tmp_path_factory.mktemp("own-words")
    clips = sorted(str(p) for p in (CLIPS / "clips").glob("*.mp3"))[:6]
    run(["transcribe", *clips, "--adapter", str(adapter30), *SHORT], tmp)
    rows = [json.loads(line) for line in (tmp / "transcripts.jsonl").read_text().splitlines()]
    assert all(row["text"].split() for row in rows), rows  # words to score
    manifest = tmp / "own.jsonl"
    manifest.write_text("".join(json.dumps({"audio": r["path"], "text": r["text"]}) + "\n" for r in rows))
    return manifest


def test_ct2_export_loads_in_faster_whisper_and_passes_the_parity_check(tmp_path, adapter30, own_words):
    out = run(
        [
            "export",
            str(adapter30),
            "whisper-ct2",
            "--format",
            "ct2",
            "--quantization",
            "float32",
            "--check",
            str(own_words),
            "--check_quantization",
            "none",
            *SHORT,
        ],
        tmp_path,
    )
    folder = tmp_path / "whisper-ct2"
    assert {"model.bin", "tokenizer.json", "preprocessor_config.json", "vocabulary.json"} <= {
        p.name for p in folder.iterdir()
    }
    report = json.loads((folder / "parity.json").read_text())
    assert report["clips"] == 6 and report["runtime"].startswith("faster-whisper") and report["within_tolerance"]
    assert report["adapter_scores"]["wer"] == 0.0 and report["exported_scores"]["wer"] == 0.0
    assert report["clips_transcribed_differently"] == 0 and "within the tolerance" in out.stdout
    # As users load it: faster-whisper reads the tokenizer from the folder, not the hub.
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type="float32")
    assert model.hf_tokenizer.token_to_id("<|mr|>") is not None
    out = readme_one_liner("faster_whisper", {"whisper-mr-ct2": folder}, tmp_path)
    assert out.startswith("Segment(") and "text=" in out, out


def readme_one_liner(runtime: str, folders: dict[str, Path], cwd: Path) -> str:
    """The README's `python -c` line that loads an exported folder in ``runtime``, run as typed but for
    its folder and clip names; returns what it printed."""
    line = next(
        line
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("python -c") and runtime in line
    )
    clip = sorted((CLIPS / "clips").glob("*.mp3"))[0]
    for name, folder in folders.items():
        line = line.replace(f'"{name}"', f'"{folder}"')
    line = line.replace('"clip.mp3"', f'"{clip}"')
    result = subprocess.run(
        line.replace("python", sys.executable, 1), shell=True, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_transformers_export_passes_the_parity_check_through_the_pipeline(tmp_path, adapter30, own_words):
    run(
        [
            "export",
            str(adapter30),
            "whisper-hf",
            "--dtype",
            "float32",
            "--check",
            str(own_words),
            "--check_quantization",
            "none",
            *SHORT,
        ],
        tmp_path,
    )
    report = json.loads((tmp_path / "whisper-hf/parity.json").read_text())
    assert report["runtime"].startswith("transformers") and report["within_tolerance"]
    assert report["exported_scores"]["wer"] == report["adapter_scores"]["wer"] == 0.0
    # The README's line passes no language: the folder decodes in the adapter's, greedily, word for word as the
    # adapter transcribed the clip (own_words' first row, cut at 8 tokens; the line sets no limit).
    config = json.loads((tmp_path / "whisper-hf/generation_config.json").read_text())
    assert (config["language"], config["task"], config["num_beams"]) == ("mr", "transcribe", 1)
    printed = readme_one_liner("pipeline", {"whisper-mr": tmp_path / "whisper-hf"}, tmp_path)
    expected = json.loads(own_words.read_text().splitlines()[0])["text"]
    assert ast.literal_eval(printed)["text"].strip().startswith(expected), (printed, expected)


def test_parity_check_fails_when_the_exported_model_transcribes_differently(tmp_path, adapter30, own_words):
    """An exported folder whose weights drifted (here: noise on the output projection) scores worse
    than the adapter: the check says so and ``export`` exits 1."""
    from transformers import WhisperForConditionalGeneration

    from lightning_asr.deploy.export import export, parity

    export(str(adapter30), str(tmp_path / "hf"), dtype="float32")
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        torch.manual_seed(0)
        model.model.decoder.embed_tokens.weight.add_(torch.randn_like(model.model.decoder.embed_tokens.weight))
    model.save_pretrained(tmp_path / "hf")
    report = parity(
        str(adapter30),
        str(tmp_path / "hf"),
        "transformers",
        str(own_words),
        quantization="none",
        max_new_tokens=8,
        num_workers=0,
    )
    assert not report["within_tolerance"] and report["exported_scores"]["wer"] > 0.5
    assert (
        report["clips_transcribed_differently"] > 0
        and report["differences"][0]["adapter"] != report["differences"][0]["exported"]
    )


def test_export_errors_name_what_is_wrong(tmp_path, adapter30):
    out = run(["export", str(adapter30), "x", "--check", str(tmp_path / "missing.jsonl")], tmp_path, returncode=2)
    assert "--check" in out.stderr and "missing.jsonl" in out.stderr and "Traceback" not in out.stderr
    out = run(["export", str(REPO / "demo" / "whisper-tiny-random"), "y"], tmp_path, returncode=2)
    assert "not an adapter folder" in out.stderr
    out = run(["export", str(adapter30), "z", "--tolerance", "-1"], tmp_path, returncode=2)
    assert "--tolerance" in out.stderr


@pytest.mark.benchmarks
def test_export_parity_benchmark_runs_the_check_command_per_task_and_format(tmp_path, adapter30, whisper30):
    """benchmarks/export_parity.py: ``lightning-asr export --check`` per (task, format), one report row each."""
    import subprocess
    import sys

    (tmp_path / "data/cv-synth").mkdir(parents=True)
    (tmp_path / "data/cv-synth/mr").symlink_to(CLIPS)  # the demo clips in a task's place
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.export_parity",
            "--adapter",
            f"cv-synth-mr={adapter30}",
            "--model",
            whisper30,
            "--data-dir",
            str(tmp_path / "data"),
            "--formats",
            "transformers-fp16",
            "--limit",
            "3",
            "--work",
            str(tmp_path / "work"),
            "--results",
            str(tmp_path / "results"),
            "--name",
            "export-x",
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    report = json.loads((tmp_path / "results/export-x.json").read_text())
    row = report["runs"]["cv-synth-mr/transformers-fp16"]
    assert row["clips"] == 3 and row["runtime"].startswith("transformers") and row["exit_code"] in (0, 1)
    assert row["within_tolerance"] == (row["exit_code"] == 0) and report["commit"]
    assert "| cv-synth-mr/transformers-fp16 | 3 |" in (tmp_path / "results/export-x.md").read_text()


def test_faster_whisper_is_given_the_features_the_adapter_was_trained_on(whisper30):
    """faster-whisper pads a short clip's log-mel with zeros; the parity check (and the README's
    snippet) pad the audio instead, so its features are Whisper's, as in training."""
    import numpy as np
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperFeatureExtractor

    from lightning_asr.data.audio import load_audio, log_mel
    from lightning_asr.deploy.export import whisper_window

    wave = load_audio(str(sorted((CLIPS / "clips").glob("*.mp3"))[0]))
    trained = log_mel(WhisperFeatureExtractor.from_pretrained(whisper30), wave)
    theirs = FeatureExtractor(feature_size=trained.shape[0])
    # What faster-whisper's transcribe decodes: the features of its input, cut or padded to one window.
    given = pad_or_trim(theirs(whisper_window(wave)))
    assert len(wave) < 16_000 * 30 and given.shape == trained.shape
    assert np.abs(given - trained).max() < 1e-3
    assert np.abs(pad_or_trim(theirs(wave)) - trained).max() > 0.5  # unpadded: zeros where training saw silence
