"""Long recordings into training windows: where a transcript's words fall in time, from the base model.

A recording past Whisper's 30 s window (Spontaneous Speech answers run past five minutes) can train only in pieces,
and a piece needs the words said in it; the release gives one transcript for the whole recording. The base model
transcribes it with timestamps (transformers' sequential long-form decoding), the reference transcript is aligned
with that transcription character by character (an edit-distance alignment: the model's errors move no boundary
much), and each segment boundary the model found is carried over to the reference, snapped to a space. Consecutive
segments up to ``max_s`` make one window, labelled with the reference's words, never the model's.

A recording the model transcribes too badly to align (character error rate above ``max_cer``) is skipped and counted
(``unaligned``), as is one it hears no speech in.
"""

import logging
from dataclasses import dataclass

import torch
from rapidfuzz.distance import Levenshtein

from lightning_asr.batch import SAMPLING_RATE, Skipped
from lightning_asr.data.audio import AudioError, read_clip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Span:
    """One training window of a recording: ``duration`` seconds from ``offset``, and the reference's words in it."""

    path: str
    offset: float
    duration: float
    text: str


def segment_times(model, processor, waveform, language: str) -> list[tuple[float, float, str]]:
    """The base model's timestamped transcription of a whole recording: ``(start, end, text)`` per segment."""
    features = processor.feature_extractor(
        waveform,
        sampling_rate=SAMPLING_RATE,
        truncation=False,
        padding="longest",
        return_attention_mask=True,
        return_tensors="pt",
    )
    if features.input_features.shape[-1] < 3000:  # shorter than one window: padded to it, as Whisper expects
        features = processor.feature_extractor(waveform, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        features["attention_mask"] = None
    device, dtype = model.device, model.dtype
    with torch.no_grad():
        out = model.generate(
            input_features=features.input_features.to(device, dtype),
            attention_mask=None if features.get("attention_mask") is None else features.attention_mask.to(device),
            language=language,
            task="transcribe",
            return_timestamps=True,
            return_segments=True,
        )
    segments = out["segments"][0]
    tokenizer = processor.tokenizer
    return [
        (float(s["start"]), float(s["end"]), tokenizer.decode(s["tokens"], skip_special_tokens=True).strip())
        for s in segments
    ]


def carried_over(hypothesis: str, reference: str, positions: list[int]) -> list[int]:
    """Each position of ``hypothesis`` as the matching position of ``reference``: through the edit-distance
    alignment, proportionally inside a replaced run, at its start for hypothesis text the reference lacks."""
    out = []
    ops = Levenshtein.opcodes(hypothesis.lower(), reference.lower())
    for p in positions:
        for op in ops:
            if op.src_start <= p < op.src_end or (p == op.src_end == len(hypothesis)):
                if op.tag == "delete":
                    out.append(op.dest_start)
                else:
                    span = max(op.src_end - op.src_start, 1)
                    out.append(op.dest_start + round((p - op.src_start) * (op.dest_end - op.dest_start) / span))
                break
        else:
            out.append(len(reference))
    return out


def snapped(text: str, position: int) -> int:
    """``position`` moved to the nearest space of ``text`` (or its start or end): a boundary never cuts a word."""
    if position <= 0 or position >= len(text):
        return min(max(position, 0), len(text))
    for step in range(len(text)):
        for p in (position - step, position + step):
            if 0 < p < len(text) and text[p].isspace():
                return p
    return position


def windows(
    path: str, reference: str, segments: list[tuple[float, float, str]], max_s: float = 30.0, max_cer: float = 0.5
) -> list[Span] | Skipped:
    """A recording's training windows from its segments and reference, or why it has none."""
    segments = [s for s in segments if s[2]]
    if not segments:
        return Skipped(path, "unaligned", "the base model heard no speech in it")
    hypothesis, ends = "", []
    for _, _, text in segments:
        hypothesis += (" " if hypothesis else "") + text
        ends.append(len(hypothesis))
    cer = Levenshtein.distance(hypothesis.lower(), reference.lower()) / max(len(reference), 1)
    if cer > max_cer:
        return Skipped(path, "unaligned", f"the base model's transcription differs by {100 * cer:.0f} % of characters")
    cuts = [snapped(reference, p) for p in carried_over(hypothesis, reference, ends)]
    cuts[-1] = len(reference)  # whatever follows the last boundary the model found is still said in its segment
    spans, first, begin = [], 0, 0
    for i, (_, end, _) in enumerate(segments):
        last = i + 1 == len(segments)
        if last or segments[i + 1][1] - segments[first][0] > max_s:
            start = segments[first][0]
            text = reference[begin : cuts[i]].strip()
            if text and end > start:
                spans.append(Span(path, round(start, 2), round(min(end - start, max_s), 2), text))
            first, begin = i + 1, cuts[i]
    return spans


def align_recordings(
    model_name: str, language: str, recordings: list[tuple[str, str]], max_s: float = 30.0
) -> tuple[list[Span], list[Skipped]]:
    """Windows of every ``(path, reference)`` recording, by the base model ``model_name`` (on the GPU where there is
    one), and the recordings that gave none."""
    from transformers import WhisperForConditionalGeneration

    from lightning_asr.model.whisper import load_processor, resolve_model

    gpu = torch.cuda.is_available()
    model = WhisperForConditionalGeneration.from_pretrained(
        resolve_model(model_name), dtype=torch.float16 if gpu else torch.float32
    )
    model.to("cuda" if gpu else "cpu").eval()
    processor = load_processor(model_name, language, "transcribe")
    spans, skipped = [], []
    for n, (path, reference) in enumerate(recordings, start=1):
        try:
            waveform = read_clip(path, path)
        except AudioError as err:
            skipped.append(err.skipped)
            continue
        found = windows(path, reference, segment_times(model, processor, waveform, language), max_s)
        if isinstance(found, Skipped):
            skipped.append(found)
        else:
            spans += found
        if n % 50 == 0 or n == len(recordings):
            log.info("long clips: %d of %d aligned, %d windows so far", n, len(recordings), len(spans))
    return spans, skipped
