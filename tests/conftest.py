"""Fixtures: a tiny random Whisper built in a temp dir, synthetic audio, and the ../shared gate."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "demo" / "whisper-tiny-random"
SHARED = Path(os.environ.get("LIGHTNING_ASR_SHARED", REPO.parent / "shared"))
requires_shared = pytest.mark.skipif(
    not (SHARED / "data").is_dir(),
    reason=f"needs the team's shared assets at {SHARED} (set LIGHTNING_ASR_SHARED); a fresh clone has none",
)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TOKENIZER_FILES = [
    "added_tokens.json", "merges.txt", "vocab.json", "special_tokens_map.json", "tokenizer_config.json",
    "preprocessor_config.json", "processor_config.json", "generation_config.json",
]


def tiny_config(**overrides) -> WhisperConfig:
    base = json.loads((DEMO_MODEL / "config.json").read_text())
    base.update(d_model=64, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
    base.update(overrides)
    return WhisperConfig(**base)


def write_tiny_model(folder: Path, weights: bool = True, **overrides) -> Path:
    """A tiny random Whisper (10 s window, real multilingual tokenizer) saved like a hub checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(DEMO_MODEL / name, folder / name)
    config = tiny_config(**overrides)
    if weights:
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(config)
        model.generation_config = GenerationConfig.from_pretrained(DEMO_MODEL)
        model.save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(write_tiny_model(tmp_path_factory.mktemp("tiny-whisper")))


@pytest.fixture(scope="session")
def whisper30(tmp_path_factory) -> str:
    """A config-only tiny Whisper with the standard 30 s window (for real-length clips)."""
    from benchmarks.speed import write_processor

    folder = write_tiny_model(tmp_path_factory.mktemp("whisper30"), weights=False, max_source_positions=1500)
    return str(write_processor(folder))


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    signal = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    return np.stack([signal] * channels, axis=1).astype(np.float32) if channels > 1 else signal.astype(np.float32)


HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"
SENTENCES = ["मी घरी जातो.", "ती शाळेत गेली.", "\"No, I don't,\" was the blunt reply.", "हे पुस्तक छान आहे.", "आज पाऊस पडला.", "तो गाणे गातो."]


def write_common_voice(root: Path, rates=(48000, 8000, 22050), splits=("train", "dev", "test"), rows_per_split=2) -> Path:
    """A small Common Voice locale folder (new 13-column header) with wav clips at several rates."""
    locale = root / "mr"
    (locale / "clips").mkdir(parents=True, exist_ok=True)
    n = 0
    for split in splits:
        lines = [HEADER]
        for _ in range(rows_per_split):
            name = f"common_voice_mr_{n:08d}.wav"
            rate = rates[n % len(rates)]
            sf.write(locale / "clips" / name, tone(1.0 + 0.25 * n, rate, seed=n), rate)
            sentence = SENTENCES[n % len(SENTENCES)]
            lines.append(f"c{n}\t{name}\ts{n}\t{sentence}\t\t2\t0\t\t\t\t\tmr\t")
            n += 1
        (locale / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root
