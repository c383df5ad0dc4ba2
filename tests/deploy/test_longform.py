"""Long-form transcription: windows of a long file, segment times, subtitles."""

import numpy as np
import pytest
import soundfile as sf

from lightning_asr.deploy import longform
from lightning_asr.deploy.longform import Segment, parse_segments, srt, vtt
from tests.conftest import (
    REPO,
    SHARED,
    compiled_fp8_module,
    fp8_casts,
    randomize_lora_b,
    requires_shared,
    run,
    tiny_module,
    tone,
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import WhisperTokenizer

    return WhisperTokenizer.from_pretrained(REPO / "demo" / "whisper-tiny-random")


def test_segments_are_read_from_timestamp_tokens(tokenizer):
    def t(s: float) -> int:
        return tokenizer.convert_tokens_to_ids(f"<|{s:.2f}|>")

    hello, world = (
        tokenizer(" hello", add_special_tokens=False).input_ids,
        tokenizer(" world", add_special_tokens=False).input_ids,
    )
    prompt = tokenizer.prefix_tokens[:3]
    # Paired (closing + opening) and single timestamps, then a segment the window cut off.
    ids = [*prompt, t(0), *hello, t(2.4), t(2.4), *world, t(5), *hello, t(7.5), *world, tokenizer.eos_token_id]
    done, tail = parse_segments(ids, tokenizer)
    assert done == [(0.0, 2.4, " hello"), (2.4, 5.0, " world"), (5.0, 7.5, " hello")]
    assert tail == (7.5, " world")
    assert parse_segments([*prompt, *hello], tokenizer) == ([], (0.0, " hello"))  # no timestamps at all


def test_subtitle_formats():
    segments = [Segment(0.0, 2.5, "one"), Segment(61.25, 3725.5, "two")]
    assert srt(segments) == "1\n00:00:00,000 --> 00:00:02,500\none\n\n2\n00:01:01,250 --> 01:02:05,500\ntwo\n"
    assert vtt(segments).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\none\n")


def test_a_long_file_is_read_one_window_at_a_time(tmp_path, tiny_model, monkeypatch):
    sf.write(tmp_path / "long.wav", np.concatenate([tone(5.0, 16000, seed=i) for i in range(19)]), 16000)  # 95 s
    module = tiny_module(tiny_model, quantization="none")
    randomize_lora_b(module, std=0.05)
    reads, read = [], longform.read_window
    monkeypatch.setattr(
        longform,
        "read_window",
        lambda path, start, seconds: reads.append((start, seconds)) or read(path, start, seconds),
    )
    segments, language = longform.transcribe_long(module.eval(), str(tmp_path / "long.wav"))
    assert language == "mr" and all(seconds <= 30.0 for _, seconds in reads)
    assert reads[0][0] == 0 and reads[-1][0] + reads[-1][1] == pytest.approx(95.0)  # the whole file, windows in order
    assert all(b[0] > a[0] for a, b in zip(reads, reads[1:]))
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and all(0 <= s.start < s.end <= 95.0 for s in segments)


def test_long_form_decodes_in_the_modules_decoding_mode(tmp_path, tiny_model, monkeypatch):
    """A module built with compiled FP8 layers detects and decodes as transcribe does: eagerly, FP8 casts off."""
    from torch._dynamo.utils import counters

    sf.write(tmp_path / "a.wav", tone(4.0, 16000), 16000)
    module = compiled_fp8_module(tiny_model)
    seen, detect, generate = [], longform.detect_languages, module.model.generate
    monkeypatch.setattr(
        longform, "detect_languages", lambda *a, **k: seen.append(fp8_casts(module.model)) or detect(*a, **k)
    )
    monkeypatch.setattr(
        module.model, "generate", lambda *a, **k: seen.append(fp8_casts(module.model)) or generate(*a, **k)
    )
    longform.transcribe_long(module, str(tmp_path / "a.wav"))
    assert len(seen) == 2 and all(s == {"disabled"} for s in seen)
    assert fp8_casts(module.model) != {"disabled"}  # back to FP8 afterwards
    assert not counters["stats"]["unique_graphs"]  # nothing compiled for decoding


def test_a_window_keeps_its_segments_while_their_times_run_forward():
    from lightning_asr.deploy.longform import in_order

    done = [(0.0, 4.0, "a"), (4.0, 9.0, "b"), (0.0, 1.0, "loop"), (1.0, 2.0, "more")]
    assert in_order(done, (2.0, "tail"), 30.0) == ([(0.0, 4.0, "a"), (4.0, 9.0, "b")], None, True)
    assert in_order([(0.0, 4.0, "a"), (4.0, 12.0, "b")], (12.0, "tail"), 10.0) == (
        [(0.0, 4.0, "a"), (4.0, 10.0, "b")],
        None,
        True,
    )
    assert in_order([(0.0, 4.0, "a")], (4.0, "tail"), 30.0) == ([(0.0, 4.0, "a")], (4.0, "tail"), False)
    # A segment that closes before it opens (`<|24.92|> … fat<|4.96|>`, seen at a window boundary) is where it breaks.
    assert in_order([(0.0, 24.92, "a"), (24.92, 4.96, "fat")], None, 30.0) == ([(0.0, 24.92, "a")], None, True)


def test_the_next_window_starts_where_the_kept_speech_ends():
    """Whisper's scheme: after complete segments, where the last one ended (what followed is decoded again); a window
    without any moves on whole, its text kept as one segment; never a creep of a few tokens."""
    from lightning_asr.deploy.longform import next_position

    # A decode cut by a jump back resumes at the end of what it kept, not after the whole window.
    assert next_position(30.0, 30.0, 77.5, [(0.0, 24.92, "a")], None, True) == (54.92, None)
    # An unfinished segment is decoded again from its start.
    assert next_position(0.0, 30.0, 77.5, [(0.0, 20.0, "a")], (20.0, "b"), False) == (20.0, None)
    # Complete segments to the end of the window: the next window.
    assert next_position(0.0, 30.0, 77.5, [(0.0, 29.5, "a")], None, False) == (30.0, None)
    # No complete segment: the whole window moves on, its text one segment from where it began.
    assert next_position(0.0, 30.0, 77.5, [], (0.02, "b"), False) == (30.0, (0.02, 30.0))
    # The file's last window keeps its unfinished segment.
    assert next_position(60.0, 17.5, 77.5, [(0.0, 10.0, "a")], (10.0, "b"), False) == (77.5, (70.0, 77.5))
    # An unfinished segment that begins within a second: the window moves on whole instead of by 0.3 s.
    assert next_position(0.0, 30.0, 77.5, [(0.0, 0.3, "a")], (0.3, "b"), False) == (30.0, (0.3, 30.0))


def test_a_windows_token_budget_follows_its_length(tiny_model):
    from lightning_asr.deploy.longform import token_budget

    module = tiny_module(tiny_model, quantization="none")
    module.decoding.max_new_tokens = 444
    assert token_budget(module, 30.0) == 444 and token_budget(module, 4.0) == 80 and token_budget(module, 0.01) == 1


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spoken_digits(folder, seconds_at_least: float = 65.0):
    """A long file of real speech: the FSDD test split's spoken digits in a fixed random order, 0.3-0.8 s apart
    (8 kHz WAV), and each word's (digit, start, end)."""
    import csv

    with open(SHARED / "data/real/fsdd-takes5-49/en/test.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    rng = np.random.default_rng(0)
    parts, words, t = [], [], 0.0
    for i in rng.permutation(len(rows)):
        if t >= seconds_at_least:
            break
        audio, rate = sf.read(SHARED / "data/real/fsdd-takes5-49/en/clips" / rows[i]["path"], dtype="float32")
        gap = np.zeros(int(rate * rng.uniform(0.3, 0.8)), np.float32)
        words.append((str(DIGITS.index(rows[i]["sentence"])), t, t + len(audio) / rate))
        parts += [audio, gap]
        t += (len(audio) + len(gap)) / rate
    sf.write(folder / "digits.wav", np.concatenate(parts), rate)
    return folder / "digits.wav", words


def words_lost(words, segments) -> float:
    """The share of spoken words that no segment's time span covers: speech the transcript skipped."""
    return sum(not any(s <= (a + b) / 2 <= e for s, e in segments) for _, a, b in words) / len(words)


@pytest.mark.slow
@requires_shared
def test_long_form_loses_no_more_speech_than_transformers_long_form(tmp_path):
    """Over a minute of real speech through `lightning-asr transcribe --timestamps`, as a user types it: no more of
    the spoken words fall outside every segment than with transformers' own long-form generate on the same base
    (greedy, the same fallback), and the words said are found. Resuming a whole window after a decode that jumped back
    in time left 5 s gaps (from 25.1 s to the window's end at 30.0 s, on this file) and left their words unheard."""
    import json
    import re

    import jiwer
    import torch

    from lightning_asr.data.audio import load_audio
    from lightning_asr.deploy.longform import FALLBACK
    from lightning_asr.deploy.transcribe import decoder_module
    from lightning_asr.text import normalize

    path, words = spoken_digits(tmp_path)
    base = str(SHARED / "models/whisper-base")
    run(
        ["transcribe", str(path), "--base", base, "--language", "en", "--timestamps", "true", "--num_workers", "0"],
        tmp_path,
    )
    row = json.loads((tmp_path / "transcripts.jsonl").read_text())
    ours = [(s["start"], s["end"]) for s in row["segments"]]
    # transformers' long-form on the model transcribe decodes with (the same base, the same generation config).
    module = decoder_module(None, base, "en", None, None, None, "generate")
    module.configure_model()
    processor = module.processor
    features = processor(
        load_audio(str(path)),
        sampling_rate=16_000,
        return_tensors="pt",
        truncation=False,
        padding="longest",
        return_attention_mask=True,
    )
    torch.manual_seed(0)
    with torch.no_grad():
        out = module.model.get_base_model().generate(
            **features, language="en", task="transcribe", return_timestamps=True, return_segments=True, **FALLBACK
        )
    theirs = [(float(s["start"]), float(s["end"])) for s in out["segments"][0]]
    assert len(ours) >= 3 and ours[0][0] < 5 and ours[-1][1] > words[-1][1] - 10
    assert all(a[0] < b[0] and a[1] <= b[0] + 0.02 for a, b in zip(ours, ours[1:]))  # in order, not overlapping
    assert words_lost(words, ours) <= words_lost(words, theirs) + 0.005, (ours, theirs)
    said = list(re.sub(r"\D", "", normalize(row["text"], "en")))
    found = jiwer.process_words(" ".join(d for d, _, _ in words), " ".join(said)).hits / len(words)
    assert found >= 0.8, (found, row["text"])
