"""Common Voice Spontaneous Speech: the release's one TSV with its split column, annotation tags removed, and long
recordings either cut into windows labelled with the words said in each (aligned by the base model) or skipped."""

import numpy as np
import pytest
import soundfile as sf
from rapidfuzz.distance import Levenshtein

from lightning_asr.data import SpeechDataModule
from lightning_asr.data.align import carried_over, snapped, windows
from lightning_asr.data.sources import DataConfigError
from lightning_asr.data.spontaneous import read_windows, windows_file
from tests.conftest import REPO, SHARED, demo_args, requires_shared, run, tone

HEADER = (
    "client_id\taudio_id\taudio_file\tduration_ms\tprompt_id\tprompt\ttranscription\tvotes\tage\tgender\taccents\t"
    "variant\tlanguage\tprompt_upvotes\tprompt_reports\tis_edited\tsplit\tchar_per_sec\tquality_tags"
)
RELEASE = "sps-corpus-2.0-2025-12-05-mr"


def write_release(root, recordings: list[tuple[np.ndarray, str, str]], locale: str = "mr"):
    """A Spontaneous Speech release folder: ``(16 kHz audio, transcription, split)`` per recording."""
    folder = root / RELEASE.replace("-mr", f"-{locale}")
    (folder / "audios").mkdir(parents=True)
    lines = [HEADER]
    for n, (audio, text, split) in enumerate(recordings):
        name = f"spontaneous-speech-{locale}-{n}.wav"
        sf.write(folder / "audios" / name, audio, 16000)
        ms = round(1000 * len(audio) / 16000)
        lines.append(
            f"c{n}\t{n}\t{name}\t{ms}\tp{n}\tWhat did you do?\t{text}\t2\t\t\t\t\t{locale}\t1\t0\t0\t{split}\t9\t"
        )
    (folder / f"ss-corpus-{locale}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_the_split_column_picks_rows_tags_go_and_long_recordings_are_skipped_when_asked(tmp_path, tiny_model):
    recordings = [
        (tone(1.0, 16000, seed=0), "मी [disfluency] शाळेत जातो", "train"),
        (tone(1.5, 16000, seed=1), "आज पाऊस [noise] पडला", "train"),
        (tone(6.0, 16000, seed=2), "खूप लांब उत्तर", "train"),  # over max_duration_s: long
        (tone(1.0, 16000, seed=3), "हे चाचणीसाठी", "test"),
        (tone(1.0, 16000, seed=4), "अजून तपासले नाही", "unassigned"),
    ]
    folder = write_release(tmp_path, recordings)
    dm = SpeechDataModule(
        source="spontaneous",
        path=str(tmp_path),
        locale="mr",
        train_split="train",
        val_split="test",
        long_clips="skip",
        max_duration_s=4.0,
        model=tiny_model,
        language="mr",
        num_workers=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.datasets["train"].rows["text"].to_pylist() == ["मी शाळेत जातो", "आज पाऊस पडला"]
    assert dm.datasets["val"].rows["text"].to_pylist() == ["हे चाचणीसाठी"]
    assert (
        dm.skipped == {"too_long": 1} and str(folder / "audios" / "spontaneous-speech-mr-2.wav") in dm.skipped_clips()
    )
    with pytest.raises(DataConfigError, match=r"split 'dev': no row of ss-corpus-mr.tsv has it; its splits: \['test'"):
        dm.rows("dev")
    with pytest.raises(DataConfigError, match=r"data.path: no ss-corpus-en.tsv in .*; found \['ss-corpus-mr.tsv'\]"):
        SpeechDataModule(source="spontaneous", path=str(folder), locale="en", model=tiny_model).rows("train")


def test_a_boundary_is_carried_from_the_models_words_to_the_references_and_never_cuts_a_word():
    reference = "the cat sat on the mat. then it slept all day long"
    hypothesis = "the cat sad on a mat then it slept all day long"  # the model's errors
    end_of_first = hypothesis.index(" then")
    (carried,) = carried_over(hypothesis, reference, [end_of_first])
    assert reference[: snapped(reference, carried)].strip() == "the cat sat on the mat."
    segments = [(0.0, 3.0, "the cat sad on a mat"), (3.4, 7.0, "then it slept all day long")]
    spans = windows("x.wav", reference, segments, max_s=5.0)
    assert [(s.offset, s.duration, s.text) for s in spans] == [
        (0.0, 3.0, "the cat sat on the mat."),
        (3.4, 3.6, "then it slept all day long"),
    ]
    assert windows("x.wav", reference, [(0.0, 5.0, "completely different words here")]).reason == "unaligned"


@pytest.fixture(scope="module")
def long_release(tmp_path_factory):
    """Two long English recordings (four cv-synth/en sentences each, 0.6 s apart) and a short one, with their
    sentence times."""
    import csv

    from lightning_asr.data.audio import read_clip

    en = SHARED / "data/cv-synth/en"
    with open(en / "train.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:9]
    recordings, times = [], []
    for group in (rows[0:4], rows[4:8]):
        parts, at, spans = [], 0.0, []
        for row in group:
            clip = read_clip(str(en / "clips" / row["path"]), row["path"])
            parts += [clip, np.zeros(int(0.6 * 16000), np.float32)]
            spans.append((at, at + len(clip) / 16000, row["sentence"]))
            at += len(clip) / 16000 + 0.6
        recordings.append((np.concatenate(parts), " ".join(r["sentence"] for r in group), "train"))
        times.append(spans)
    short = read_clip(str(en / "clips" / rows[8]["path"]), rows[8]["path"])
    recordings.append((short, rows[8]["sentence"], "train"))
    root = tmp_path_factory.mktemp("sps")
    write_release(root, recordings, locale="en")
    return root, times


@requires_shared
def test_long_recordings_become_windows_labelled_with_the_words_said_in_them(long_release):
    root, times = long_release
    model = str(SHARED / "models/whisper-base")
    dm = SpeechDataModule(
        source="spontaneous",
        path=str(root),
        locale="en",
        train_split="train",
        val_split="train",
        test_split="train",
        max_duration_s=10.0,
        model=model,
        language="en",
        num_workers=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    rows = dm.datasets["train"].rows
    cells, texts = rows["audio"].to_pylist(), rows["text"].to_pylist()
    assert cells[0]["duration"] is None  # the short recording, whole
    for n, spans in enumerate(times):
        mine = [(c, t) for c, t in zip(cells, texts) if c["path"].endswith(f"-en-{n}.wav")]
        assert len(mine) >= 2 and all(0 < c["duration"] <= 10.0 for c, _ in mine)
        # Every word of the transcript is in exactly one window, in order.
        assert " ".join(t for _, t in mine).split() == " ".join(s for *_, s in spans).split()
        for cell, text in mine:  # and each window's words are the sentences said inside it
            inside = " ".join(
                s for a, b, s in spans if cell["offset"] - 0.3 <= (a + b) / 2 <= cell["offset"] + cell["duration"]
            )
            assert Levenshtein.distance(text.split(), inside.split()) <= 0.2 * len(inside.split()), (cell, text, inside)
    found = windows_file(root / RELEASE.replace("-mr", "-en") / "ss-corpus-en.tsv", "train", model, 10.0)
    assert found.is_file() and len(read_windows(found)[0]) == len(cells) - 1


def test_fit_reads_a_spontaneous_speech_release_as_the_readme_shows(tmp_path):
    recordings = [(tone(1.0 + 0.2 * n, 16000, seed=n), f"वाक्य [noise] क्रमांक {n}", "train") for n in range(4)]
    recordings += [(tone(1.0, 16000, seed=9), "तपासणी", "dev")]
    write_release(tmp_path, recordings)
    spontaneous = ["--data.source=spontaneous", f"--data.path={tmp_path}", "--data.locale=mr"]
    splits = ["--data.train_split=train", "--data.val_split=dev", "--trainer.max_steps=2"]
    out = run(demo_args(tmp_path, *spontaneous, *splits), REPO)
    assert "data: train 4 rows, val 1 rows" in out.stdout + out.stderr
    assert (tmp_path / "adapters" / "last" / "adapter_model.safetensors").is_file()
