"""Long-form transcription: audio of any length, 30 s at a time, as timed segments; SRT and WebVTT.

Whisper's sequential scheme: decode a 30 s window (the feature extractor's) with timestamp tokens, keep its complete
segments, and start the next window where the last unfinished segment began (or after the
window, where every segment ended). Only one window of audio is ever decoded and held, read by a
seek into the file, so an hour costs the memory of 30 s.
"""

import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
import torch

from lightning_asr.batch import SAMPLING_RATE, TIME_STEP_S
from lightning_asr.data.audio import AudioError, header_seconds, log_mel
from lightning_asr.model.decode import detect_languages
from lightning_asr.text import clean_transcript

# Whisper's fallback, as transformers' long-form generate takes it: a window whose greedy decode
# loops (tokens compress too well) or is unlikely is decoded again at the next temperature.
FALLBACK = dict(temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), compression_ratio_threshold=1.35, logprob_threshold=-1.0)


@dataclass
class Segment:
    start: float
    end: float
    text: str


def read_window(path: str, start_s: float, seconds: float) -> np.ndarray:
    """``seconds`` of ``path`` from ``start_s``, as 16 kHz mono float32; nothing else is decoded."""
    try:
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            f.seek(min(int(round(start_s * rate)), f.frames))
            audio = f.read(int(round(seconds * rate)), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(path, "undecodable", f"not a readable audio stream: {type(err).__name__}") from None
    audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, SAMPLING_RATE).astype(np.float32) if rate != SAMPLING_RATE else audio


def file_seconds(path: str) -> float:
    seconds = header_seconds(path)
    if seconds is None:
        raise AudioError(path, "undecodable", "not a readable audio stream")
    return seconds


def parse_segments(ids: list[int], tokenizer) -> tuple[list[tuple[float, float, str]], tuple[float, str] | None]:
    """A window's tokens as its complete ``(start, end, text)`` segments, and the unfinished one
    (``(start, text)``) that ran off the window or had no closing timestamp; without any timestamp
    token, the whole text is one unfinished segment from 0."""
    begin = tokenizer.convert_tokens_to_ids("<|0.00|>")
    special = set(tokenizer.all_special_ids)
    done, start, text = [], None, []
    for token in ids:
        if token >= begin:
            time = (token - begin) * TIME_STEP_S
            if start is not None and text:
                done.append((start, time, tokenizer.decode(text)))
                text = []
            start = time  # a closing timestamp also opens the next segment; a repeated one moves it
        elif token not in special:
            text.append(token)
    tail = (start or 0.0, tokenizer.decode(text)) if text else None
    return done, tail


@torch.no_grad()
def transcribe_long(
    module, path: str, language: str | None = None, start: float = 0.0, end: float | None = None
) -> tuple[list[Segment], str]:
    """``path`` (from ``start`` to ``end`` seconds) as timed segments, and the language decoded in:
    ``language``, the module's, or detected on the first window. Greedy, with Whisper's
    temperature fallback for windows that loop; the fallback's sampling is seeded per file."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    # fork_rng: the same transcript every time, the caller's RNG untouched; decoding_mode: as transcribe decodes
    # (layers eager, FP8 layers in the base's dtype), whatever speed knobs the module was built with
    with torch.random.fork_rng(devices=devices), module.decoding_mode():
        torch.manual_seed(0)
        return _windows(module, path, language, start, end)


def _windows(module, path: str, language: str | None, start: float, end: float | None) -> tuple[list[Segment], str]:
    end = file_seconds(path) if end is None else end
    whisper, tokenizer = module.model.get_base_model(), module.processor.tokenizer
    device, dtype = whisper.device, module.dtype_of_inputs()
    language = language or module.language
    window = float(module.processor.feature_extractor.chunk_length)  # Whisper's 30 s
    segments, position = [], start
    while end - position > TIME_STEP_S:
        seconds = min(window, end - position)
        wave = read_window(path, position, seconds)
        features = torch.from_numpy(log_mel(module.processor.feature_extractor, wave))[None].to(device, dtype)
        if language is None:
            language = detect_languages(whisper, features, tokenizer)[0]
        ids = module.model.generate(
            input_features=features,
            language=language,
            task=module.hparams.task,
            return_timestamps=True,
            max_new_tokens=token_budget(module, seconds),
            **FALLBACK,
        )[0].tolist()
        done, tail, cut = in_order(*parse_segments(ids, tokenizer), seconds)
        segments += [Segment(round(position + s, 2), round(position + e, 2), clean_transcript(t)) for s, e, t in done]
        position, finished = next_position(position, seconds, end, done, tail, cut)
        if finished is not None:
            segments.append(Segment(round(finished[0], 2), round(finished[1], 2), clean_transcript(tail[1])))
    return [s for s in segments if s.text], language


def token_budget(module, seconds: float) -> int:
    """A window's token budget: ``max_new_tokens``, and no more than speech of its length holds. A decode that loops
    runs to its budget at every fallback temperature: a 4 s window of a barely trained adapter took minutes at 444."""
    return max(1, min(module.decoding.max_new_tokens, math.ceil(seconds * MAX_TOKENS_PER_SECOND)))


# Whisper's byte-level tokens run to ~12 a second in fast Marathi speech (328 in a 28 s window); 20 leaves room.
MAX_TOKENS_PER_SECOND = 20


def next_position(
    position: float, seconds: float, end: float, done: list, tail: tuple[float, str] | None, cut: bool
) -> tuple[float, tuple[float, float] | None]:
    """Where the next window starts, and the span of the unfinished segment to keep as it is, if any (Whisper's
    scheme, as openai/whisper's ``transcribe`` seeks): after complete segments, where the last one ended (the
    unfinished one, or what followed a decode that jumped back, is decoded again from there); without any, or at the
    file's end, after the window, the unfinished text kept whole."""
    last = position + seconds >= end - TIME_STEP_S
    if done and not last and (cut or tail is not None):
        resume = tail[0] if tail is not None else done[-1][1]
        if resume >= MIN_ADVANCE_S:
            return position + resume, None
    finished = (position + tail[0], position + seconds) if tail is not None and tail[0] < seconds else None
    return position + seconds, finished


# A window moves the position on by at least this much: one that ends its segments sooner decodes its tail again
# in the next window rather than creep through the file a few tokens at a time.
MIN_ADVANCE_S = 1.0


def in_order(
    done: list[tuple[float, float, str]], tail: tuple[float, str] | None, seconds: float
) -> tuple[list[tuple[float, float, str]], tuple[float, str] | None, bool]:
    """A window's segments as far as their times run forward inside its ``seconds`` of audio, and whether the decode
    was cut there: one that jumps back in time (a loop) or past the audio stops at that point; ends are clamped."""
    kept, last = [], 0.0
    for start, end, text in done:
        if start < last - TIME_STEP_S or start >= seconds or end < start - TIME_STEP_S:
            return kept, None, True
        kept.append((start, min(end, seconds), text))
        last = end
    if tail is not None and (tail[0] < last - TIME_STEP_S or tail[0] >= seconds):
        return kept, None, True
    return kept, tail, False


def _clock(seconds: float, separator: str) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def srt(segments: list[Segment]) -> str:
    return "\n".join(
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n" for i, s in enumerate(segments, 1)
    )


def vtt(segments: list[Segment]) -> str:
    return "WEBVTT\n\n" + "\n".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in segments)
