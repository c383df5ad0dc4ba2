"""Long-form transcription: windows of a long file, segment times, subtitles."""

import numpy as np
import pytest
import soundfile as sf

from lightning_asr import longform
from lightning_asr.longform import Segment, parse_segments, srt, vtt
from tests.conftest import REPO, compiled_fp8_module, fp8_casts, randomize_lora_b, tiny_module, tone


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import WhisperTokenizer

    return WhisperTokenizer.from_pretrained(REPO / "demo" / "whisper-tiny-random")


def test_segments_are_read_from_timestamp_tokens(tokenizer):
    t = lambda s: tokenizer.convert_tokens_to_ids(f"<|{s:.2f}|>")  # noqa: E731
    hello, world = tokenizer(" hello", add_special_tokens=False).input_ids, tokenizer(" world", add_special_tokens=False).input_ids
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
    monkeypatch.setattr(longform, "read_window", lambda path, start, seconds: reads.append((start, seconds)) or read(path, start, seconds))
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
    monkeypatch.setattr(longform, "detect_languages", lambda *a, **k: seen.append(fp8_casts(module.model)) or detect(*a, **k))
    monkeypatch.setattr(module.model, "generate", lambda *a, **k: seen.append(fp8_casts(module.model)) or generate(*a, **k))
    longform.transcribe_long(module, str(tmp_path / "a.wav"))
    assert len(seen) == 2 and all(s == {"disabled"} for s in seen)
    assert fp8_casts(module.model) != {"disabled"}  # back to FP8 afterwards
    assert not counters["stats"]["unique_graphs"]  # nothing compiled for decoding


def test_a_window_keeps_its_segments_while_their_times_run_forward():
    from lightning_asr.longform import in_order

    done = [(0.0, 4.0, "a"), (4.0, 9.0, "b"), (0.0, 1.0, "loop"), (1.0, 2.0, "more")]
    assert in_order(done, (2.0, "tail"), 30.0) == ([(0.0, 4.0, "a"), (4.0, 9.0, "b")], None)
    assert in_order([(0.0, 4.0, "a"), (4.0, 12.0, "b")], (12.0, "tail"), 10.0) == ([(0.0, 4.0, "a"), (4.0, 10.0, "b")], None)
    assert in_order([(0.0, 4.0, "a")], (4.0, "tail"), 30.0) == ([(0.0, 4.0, "a")], (4.0, "tail"))
