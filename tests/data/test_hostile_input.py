"""A Common Voice release with hostile rows, built here row by row, and what happens to each."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lightning_asr.data import SpeechDataModule
from tests.conftest import HEADER, REPO, tone

CLI = str(Path(sys.executable).with_name("lightning-asr"))


def row(name: str, sentence: str) -> str:
    return f"c\t{name}\ts\t{sentence}\t\t2\t0\t\t\t\t\tmr\t"


def hostile_release(root: Path) -> dict[str, str]:
    """Write ``root/mr`` and return, for each train row's clip name, what must happen to it:
    ``keep``, or the reason it is skipped under."""
    clips = root / "mr" / "clips"
    clips.mkdir(parents=True)
    expected, lines = {}, []

    def add(name: str, outcome: str, sentence: str = "मी घरी जातो.") -> None:
        expected[name] = outcome
        lines.append(row(name, sentence).encode())

    for i in range(4):
        sf.write(clips / f"good{i}.wav", tone(1.0 + 0.25 * i, 16000, seed=i), 16000)
        add(f"good{i}.wav", "keep")
    # Rows that leave clips/: the first would even decode.
    (root / "elsewhere").mkdir()
    sf.write(root / "elsewhere" / "x.wav", tone(1.0, 16000), 16000)
    add("../../elsewhere/x.wav", "outside_clips")
    add("../../../../etc/passwd", "outside_clips")
    add("/etc/passwd", "outside_clips")
    for name, value in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        audio = tone(1.0, 16000)
        audio[100:200] = value
        sf.write(clips / name, audio, 16000, subtype="FLOAT")
        add(name, "non_finite")
    sf.write(clips / "quote.wav", tone(1.2, 16000), 16000)
    add("quote.wav", "keep", 'He said "hello, and left')  # unbalanced: CV TSVs are unquoted
    sf.write(clips / "six.flac", tone(1.5, 96000, channels=6), 96000)
    add("six.flac", "keep")
    sf.write(clips / "mulaw.wav", tone(1.5, 8000), 8000, subtype="ULAW")
    add("mulaw.wav", "keep")
    sf.write(clips / "blip.wav", tone(0.05, 16000), 16000)
    add("blip.wav", "too_short")
    sf.write(clips / "silence.wav", np.zeros(16000, np.float32), 16000)
    add("silence.wav", "silent")
    (clips / "folder.wav").mkdir()
    add("folder.wav", "not_a_file")
    add("good0.wav", "keep")  # listed twice: used once
    sf.write(clips / "latin1.wav", tone(1.0, 16000), 16000)
    expected["latin1.wav"] = "bad_encoding"
    lines.append(row("latin1.wav", "@").encode().replace(b"@", b"caf\xe9 cr\xe8me"))  # Latin-1 bytes in a UTF-8 file
    sf.write(clips / "tab.wav", tone(1.0, 16000), 16000)
    expected["tab.wav"] = "bad_row"
    lines.append(row("tab.wav", "a tab\tinside").encode())  # one field too many: every later one shifts
    # A BOM and Windows line endings, as spreadsheet tools write them.
    (root / "mr" / "train.tsv").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join([HEADER.encode(), *lines]) + b"\r\n")
    (root / "mr" / "dev.tsv").write_text(HEADER + "\n")  # a header-only split
    sf.write(clips / "t0.wav", tone(1.0, 16000), 16000)
    (root / "mr" / "test.tsv").write_bytes(
        b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n" + row("t0.wav", "ती शाळेत गेली.").encode() + b"\r\n"
    )
    return expected


def test_every_hostile_row_is_kept_or_skipped_and_named(tmp_path, tiny_model, caplog):
    expected = hostile_release(tmp_path)
    dm = SpeechDataModule(
        model=tiny_model,
        path=str(tmp_path),
        train_split="train",
        val_split="dev",
        test_split="test",
        batch_size=3,
        num_workers=1,
    )
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
        batches = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
    trained = sorted(Path(p).name for b in batches for p in b["paths"])
    assert trained == sorted(name for name, outcome in expected.items() if outcome == "keep")  # good0 once
    skipped = {
        Path(item.path).name if item.reason.startswith("bad_") else item.path.split("/clips/")[-1]: item.reason
        for item in dm.skipped_clips().values()
    }
    want = {name: outcome for name, outcome in expected.items() if outcome != "keep"} | {"good0.wav": "duplicate"}
    want["train.tsv:18"], want["train.tsv:19"] = want.pop("latin1.wav"), want.pop("tab.wav")  # named by file:line
    assert skipped == want
    for item in dm.skipped_clips().values():
        assert str(item) in caplog.text  # each named in a warning
    assert "train.tsv:18: bad_encoding" in caplog.text
    assert "the val split 'dev'" in caplog.text and "no best/ adapter" in caplog.text
    texts = {Path(p).name: t for b in batches for p, t in zip(b["paths"], b["texts"])}
    assert texts["quote.wav"] == 'He said "hello, and left' and not any(t.endswith("\r") for t in texts.values())
    durations = {Path(p).name: round(float(d), 2) for b in batches for p, d in zip(b["paths"], b["durations"])}
    assert durations["six.flac"] == 1.5 and durations["mulaw.wav"] == 1.5
    dm.setup("test")  # a clean file with a BOM and CRLF takes Arrow's fast path: same rows, same text
    assert [x["text"] for x in (dm.datasets["test"][0],)] == ["ती शाळेत गेली."]


def test_strict_stops_at_the_first_unreadable_row(tmp_path, tiny_model):
    from lightning_asr.data.audio import AudioError

    hostile_release(tmp_path)
    dm = SpeechDataModule(
        model=tiny_model, path=str(tmp_path), train_split="train", val_split="test", strict=True, num_workers=0
    )
    with pytest.raises(AudioError, match=r"train.tsv:18: bad_encoding"):
        dm.setup("fit")


def test_fit_on_the_hostile_release_at_batch_size_1_trains_on_every_good_clip(tmp_path):
    """One clip a batch, so whole batches are skipped clips (the throughput monitor used to end such runs)."""
    hostile_release(tmp_path / "cv")
    out = subprocess.run(
        [
            CLI,
            "fit",
            "--config",
            str(REPO / "configs/demo.yaml"),
            f"--model.model={REPO}/demo/whisper-tiny-random",
            f"--data.path={tmp_path}/cv",
            "--data.train_split=train",
            "--data.val_split=test",
            "--data.batch_size=1",
            "--trainer.max_steps=20",
            "--trainer.val_check_interval=20",
            "--model.decoding.max_new_tokens=4",
            f"--data.cache_dir={tmp_path}/cache",
            "--throughput.window_size=2",
            "--trainer.log_every_n_steps=1",
        ],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "skipped 11 clip(s)" in log and "non_finite" in log and "nan.wav" in log
    assert "non-finite loss" not in log  # NaN audio never reaches the model
    assert "`Trainer.fit` stopped: `max_steps=20` reached." in log
