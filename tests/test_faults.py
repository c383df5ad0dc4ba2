"""Nothing lost: full disks, killed runs, damaged files and unwritable folders, through the commands users type."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import CLI, REPO, SHARED, requires_shared, run, user_args


def tmpfs_allowed() -> bool:
    """Whether this machine lets a test mount a small private tmpfs (a user and mount namespace): a real full disk."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(
    not tmpfs_allowed(), reason="cannot mount a private tmpfs here (unshare --user --mount)"
)
CLIP = min((REPO / "demo/common_voice/mr/clips").glob("*.mp3"))
FAST = [
    "--model.validate_before_training=false",
    "--data.num_workers=0",
    "--trainer.limit_val_batches=0",
    "--data.max_samples=8",
    "--data.batch_size=4",
    "--trainer.callbacks.every_n_train_steps=3",
]


@pytest.mark.slow
@needs_tmpfs
def test_a_full_disk_never_leaves_a_cut_checkpoint_and_resume_takes_the_last_good_one(tmp_path):
    """The checkpoint folder on an 80 MB disk; the demo writes two ~25 MB files a save (the step's and last.ckpt).
    Filled to 10 MB free after the step-3 save, the step-6 save fails and leaves no partial file (Lightning's own
    write left the cut copy it was making), and the same command resumes from step 3 once there is room."""
    disk, log = tmp_path / "disk", tmp_path / "log"
    disk.mkdir()
    fit = " ".join(CLI + user_args(*FAST, f"--trainer.callbacks.dirpath={disk}"))
    fill = f"head -c $(( $(df -B1 --output=avail {disk} | tail -1) - 10000000 )) /dev/zero > {disk}/filler"
    script = f"""
    mount -t tmpfs -o size=80m tmpfs {disk}
    {fit} --trainer.max_steps=3 > {log}.1 2>&1 || exit 1
    {fill}
    {fit} --trainer.max_steps=6 --ckpt_path last > {log}.2 2>&1; echo $? > {tmp_path}/rc2
    ls -a {disk} > {tmp_path}/after2
    cp {disk}/last.ckpt {tmp_path}/kept.ckpt
    rm {disk}/filler
    {fit} --trainer.max_steps=6 --ckpt_path last > {log}.3 2>&1 || exit 3
    cp {disk}/last.ckpt {tmp_path}/final.ckpt
    """
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(tmp_path.glob("log.*")))
    assert done.returncode == 0, done.stderr + logs
    # The step-6 save found no room: the run failed, its partial files are gone, the step-3 checkpoint is whole.
    assert (tmp_path / "rc2").read_text().strip() != "0" and "No space left" in (tmp_path / "log.2").read_text()
    left = sorted(set((tmp_path / "after2").read_text().split()) - {".", "..", "filler"})
    assert len(left) == 2 and left[0].endswith("step=3.ckpt") and left[1] == "last.ckpt", left
    assert torch.load(tmp_path / "kept.ckpt", weights_only=False)["global_step"] == 3
    # The same command, once there is room, resumes from it.
    assert "Restoring states from the checkpoint path" in (tmp_path / "log.3").read_text()
    assert torch.load(tmp_path / "final.ckpt", weights_only=False)["global_step"] == 6


@pytest.mark.slow
def test_ckpt_path_last_takes_the_newest_run_not_an_older_finished_one(tmp_path):
    """A finished run, then a new one killed before its first checkpoint: --ckpt_path last names the new run and says
    how to continue the old one, instead of "resuming" the finished run under the new command and exiting 0."""
    run(user_args(*FAST, "--trainer.max_steps=3"), tmp_path)
    assert (tmp_path / "runs/demo/version_0/checkpoints/last.ckpt").is_file()
    proc = subprocess.Popen(
        CLI + user_args(*FAST, "--trainer.max_steps=1000", "--trainer.callbacks.every_n_train_steps=900"),
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not any((tmp_path / "runs/demo/version_1").glob("events.out.tfevents.*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    proc.kill()
    proc.wait()
    out = run(user_args(*FAST, "--trainer.max_steps=6", "--ckpt_path", "last"), tmp_path, returncode=1)
    assert "the newest run, runs/demo/version_1, has no last.ckpt" in out.stderr
    assert "--ckpt_path runs/demo/version_0/checkpoints/last.ckpt" in out.stderr
    assert torch.load(tmp_path / "runs/demo/version_0/checkpoints/last.ckpt", weights_only=False)["global_step"] == 3


def test_a_garbled_adapter_is_refused_before_the_base_loads(tmp_path, demo_adapter):
    """Random bytes over the second half of the weights keep the header and offsets valid: the values give it away."""
    garbled = tmp_path / "garbled"
    shutil.copytree(demo_adapter, garbled)
    weights = garbled / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 :] = os.urandom(len(data) - len(data) // 2)
    weights.write_bytes(bytes(data))
    out = run(["transcribe", str(CLIP), "--adapter", str(garbled)], tmp_path, returncode=2)
    assert out.stderr.strip().count("\n") == 0 and "adapter_model.safetensors" in out.stderr  # one line, naming it
    assert "which no training writes: the file is damaged" in out.stderr and "Loading weights" not in out.stdout


def test_transcribe_to_an_unwritable_folder_fails_before_decoding(tmp_path, demo_adapter):
    (tmp_path / "a-file").write_text("")
    started = time.perf_counter()
    out = run(
        ["transcribe", str(CLIP), "--adapter", str(demo_adapter), "--output", "a-file/transcripts"],
        tmp_path,
        returncode=2,
    )
    assert out.stderr.strip().startswith(
        "lightning-asr transcribe: error: transcribe: --output: cannot write into a-file"
    )
    assert "Traceback" not in out.stderr and "Restoring" not in out.stdout
    assert time.perf_counter() - started < 60


def test_a_cache_folder_that_cannot_be_written_costs_the_cache_not_the_run(tmp_path, tiny_model, caplog):
    from lightning_asr.data import SpeechDataModule
    from tests.conftest import write_common_voice

    root = write_common_voice(tmp_path / "cv", rows_per_split=2)
    (tmp_path / "a-file").write_text("")
    dm = SpeechDataModule(
        path=str(root),
        model=tiny_model,
        language="mr",
        num_workers=0,
        train_split="train",
        cache_dir=str(tmp_path / "a-file/cache"),
    )
    with caplog.at_level("WARNING", logger="lightning_asr.data.audio"):
        dm.setup("fit")
        items = [dm.datasets["train"][i] for i in range(2)]
    warnings = [r.getMessage() for r in caplog.records if "data.cache_dir" in r.getMessage()]
    assert len(warnings) == 1 and "training without the decoded-audio cache" in warnings[0]
    assert all("input_features" in item for item in items)  # the clips still train


@needs_tmpfs
def test_a_cache_disk_that_fills_mid_run_leaves_no_partial_files(tmp_path):
    """The cache on a 300 KB disk: a few clips fit, then writes fail; the run finishes, no *.tmp.npy is left."""
    cache = tmp_path / "cache"
    cache.mkdir()
    fit = " ".join(
        CLI + user_args(*FAST, "--trainer.max_steps=4", "--data.max_samples=24", f"--data.cache_dir={cache}")
    )
    script = f"mount -t tmpfs -o size=300k tmpfs {cache} && {fit} > {tmp_path}/log 2>&1; echo $? > {tmp_path}/rc; ls -a {cache} > {tmp_path}/files"
    subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        timeout=600,
        check=True,
    )
    log = (tmp_path / "log").read_text()
    assert (tmp_path / "rc").read_text().strip() == "0", log[-3000:]
    assert log.count("decoding without the cache from here on") == 1  # one process (num_workers 0), one warning
    files = (tmp_path / "files").read_text().split()
    assert not [f for f in files if "tmp" in f] and any(f.endswith(".npy") for f in files)


def test_a_failed_command_is_one_line_and_leaves_no_run_folder(tmp_path):
    out = run(user_args("--model.language=Elvish"), tmp_path, returncode=2)
    assert out.stderr.strip().splitlines()[-1].startswith("lightning-asr fit: error: model.language: 'Elvish' is not a")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2  # Lightning's "Seed set to 0"
    out = run(user_args(f"--data.path={tmp_path}/nowhere"), tmp_path, returncode=2)
    assert f"lightning-asr fit: error: data.path: Common Voice folder not found: {tmp_path}/nowhere" in out.stderr
    assert "Traceback" not in out.stderr and not list(tmp_path.glob("runs/*/version_*"))


def test_a_link_out_of_the_clips_folder_is_skipped_and_named(tmp_path, tiny_model):
    from lightning_asr.data import SpeechDataModule
    from tests.conftest import write_common_voice

    root = write_common_voice(tmp_path / "cv", rows_per_split=2)
    clips = root / "mr" / "clips"
    first = min(clips.iterdir())
    first.unlink()
    first.symlink_to("/etc/passwd")
    dm = SpeechDataModule(path=str(root), model=tiny_model, language="mr", num_workers=0, train_split="train")
    dm.setup("fit")
    skipped = dm.skipped_clips()
    assert [item.reason for item in skipped.values()] == ["outside_clips"] and "a link to a file outside" in str(
        skipped
    )
    assert len(dm.datasets["train"]) == 1


def test_export_to_an_existing_file_says_it_is_a_file(tmp_path, demo_adapter):
    (tmp_path / "out").write_text("")
    out = run(["export", str(demo_adapter), "out"], tmp_path, returncode=2)
    assert "export: out is a file, not a folder" in out.stderr


def test_subtitles_keep_every_dot_of_the_file_name(tmp_path, demo_adapter):
    import numpy as np
    import soundfile as sf

    from tests.conftest import tone

    sf.write(tmp_path / "talk.v2.flac", np.concatenate([tone(3.0, 16000, seed=i) for i in range(2)]), 16000)
    run(
        [
            "transcribe",
            "talk.v2.flac",
            "--adapter",
            str(demo_adapter),
            "--num_workers",
            "0",
            "--max_new_tokens",
            "4",
            "--subtitles",
            "subs",
        ],
        tmp_path,
    )
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["0000_talk.v2.srt", "0000_talk.v2.vtt"]


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_labelled_clip_longer_than_the_window_is_skipped_by_its_header_not_decoded(tmp_path, tiny_model, monkeypatch):
    """A 2-hour WAV cost a worker 4.6 GB and 17 s every epoch, and its cache entry, before the length check."""
    import numpy as np
    import soundfile as sf

    from lightning_asr.data import SpeechDataModule, dataset
    from tests.conftest import HEADER, write_common_voice

    root = write_common_voice(tmp_path / "cv", rows_per_split=2)
    sf.write(
        root / "mr/clips/long.wav", np.zeros(8000 * 40, np.float32) + 0.1, 8000
    )  # 40 s: the tiny model's window is 10 s
    (root / "mr/train.tsv").write_text(f"{HEADER}\nc9\tlong.wav\ts9\tलांब वाक्य\t\t2\t0\t\t\t\t\tmr\t\n")
    decoded = []
    monkeypatch.setattr(
        dataset, "read_clip", lambda audio, *a, **k: decoded.append(audio) or np.zeros(16000, np.float32)
    )
    dm = SpeechDataModule(
        path=str(root),
        model=tiny_model,
        language="mr",
        num_workers=0,
        train_split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    dm.setup("fit")
    item = dm.datasets["train"][0]
    assert item.reason == "too_long" and "40.0 s" in item.detail and decoded == []
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_a_resumed_runs_wer_line_spans_the_run_and_tensorboard_steps_match_the_adapters(tmp_path):
    """The WER line of a resumed run starts at its zero-shot step 0 (it said "at step 4 -> at step 4"), and
    TensorBoard logs each validation at the step its adapter records (it said 1 where the adapter said 2)."""
    import re

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    common = [
        "--data.num_workers=0",
        "--data.max_samples=4",
        "--data.batch_size=2",
        "--trainer.val_check_interval=2",
        "--model.decoding.max_new_tokens=4",
        "--trainer.callbacks.every_n_train_steps=2",
        "--data.val_split=test",
    ]
    run(user_args(*common, "--trainer.max_steps=2"), tmp_path)
    out = run(user_args(*common, "--trainer.max_steps=4", "--ckpt_path", "last"), tmp_path)
    assert re.search(r"WER: [\d.]+% at step 0 -> [\d.]+% at step 4 ", out.stdout), out.stdout[-800:]
    run_dir = tmp_path / "runs/demo/version_0"
    steps = sorted(
        e.step
        for events in run_dir.glob("events.out.tfevents.*")
        for e in EventAccumulator(str(events), size_guidance={"scalars": 0}).Reload().Scalars("val/wer")
    )
    assert steps == [0, 2, 4]
    assert json.loads((run_dir / "adapters/last/lightning_asr.json").read_text())["global_step"] == 4


def test_a_clip_reads_the_same_decoded_or_cached(tmp_path):
    """The cache keeps float16; a fresh decode is rounded the same way, so a run's WER does not depend on what an
    earlier run cached (the demo's step-0 WER read 1280.2, 1334.9 and 1336.8 % with one seed)."""
    import numpy as np

    from lightning_asr.data.audio import read_clip

    first = read_clip(str(CLIP), CLIP.name, str(tmp_path / "cache"))
    again = read_clip(str(CLIP), CLIP.name, str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1 and np.array_equal(first, again)


@requires_shared
def test_the_decoders_own_warnings_name_the_clip(caplog, capfd):
    """libmpg123 writes its warnings to the process's standard error, naming no file: they come back as one warning
    naming the clip."""
    from lightning_asr.data.audio import AudioError, load_audio

    clip = SHARED / "data/cv-broken/mr/clips/common_voice_mr_39141691.mp3"  # truncated_head (DEFECTS.tsv)
    with caplog.at_level("WARNING", logger="lightning_asr.data.audio"), pytest.raises(AudioError):
        load_audio(str(clip))
    assert [r.getMessage() for r in caplog.records if str(clip) in r.getMessage() and "libmpg123" in r.getMessage()]
    assert "libmpg123" not in capfd.readouterr().err
