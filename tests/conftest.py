"""Fixtures: a tiny random Whisper built in a temp dir, synthetic audio, and the ../shared gate."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

from lightning_asr.data import SpeechDataModule
from lightning_asr.model.knobs import Decoding, Speed
from lightning_asr.model.lora import LoRA
from lightning_asr.model.module import WhisperLoRA

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "demo" / "whisper-tiny-random"
SHARED = Path(os.environ.get("LIGHTNING_ASR_SHARED", REPO.parent / "shared"))
requires_shared = pytest.mark.skipif(
    not (SHARED / "data").is_dir(),
    reason=f"needs the team's shared assets at {SHARED} (set LIGHTNING_ASR_SHARED); a fresh clone has none",
)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TOKENIZER_FILES = [
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
]


def tiny_config(**overrides) -> WhisperConfig:
    base = json.loads((DEMO_MODEL / "config.json").read_text())
    base.update(
        d_model=64, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128
    )
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
    """A config-only tiny Whisper with the standard 30 s window (for real-length clips): the demo's
    tokenizer beside transformers' default (30 s) feature extractor."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    folder = write_tiny_model(tmp_path_factory.mktemp("whisper30"), weights=False, max_source_positions=1500)
    tokenizer = WhisperTokenizer.from_pretrained(REPO / "demo" / "whisper-tiny-random")
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)
    return str(folder)


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    signal = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    return np.stack([signal] * channels, axis=1).astype(np.float32) if channels > 1 else signal.astype(np.float32)


HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"
SENTENCES = [
    "मी घरी जातो.",
    "ती शाळेत गेली.",
    '"No, I don\'t," was the blunt reply.',
    "हे पुस्तक छान आहे.",
    "आज पाऊस पडला.",
    "तो गाणे गातो.",
]


def write_common_voice(
    root: Path, rates=(48000, 8000, 22050), splits=("train", "dev", "test"), rows_per_split=2
) -> Path:
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


# -- tiny modules and the CLI, shared by several test files --------------------------------------


def tiny_module(model: str, **kwargs) -> WhisperLoRA:
    defaults = dict(
        model=model,
        language="mr",
        speed=Speed(gradient_checkpointing=False),
        lora=LoRA(r=4, alpha=8, dropout=0.0),
        validate_before_training=False,
        decoding=Decoding(max_new_tokens=8),
    )
    module = WhisperLoRA(**(defaults | kwargs))
    torch.manual_seed(0)  # LoRA's A matrices are drawn at random
    module.configure_model()
    return module


def compiled_fp8_module(model: str) -> WhisperLoRA:
    """A tiny module with compiled FP8 layers and ``language: auto``, dynamo's caches and counters fresh: for checks
    that decoding (language detection included) compiles nothing and runs without FP8 casts."""
    from torch._dynamo.utils import counters

    pytest.importorskip("torchao.float8")
    torch._dynamo.reset()
    counters.clear()
    return tiny_module(
        model, quantization="none", language="auto", speed=Speed(gradient_checkpointing=False, compile=True, fp8=True)
    ).eval()


def fp8_casts(model: torch.nn.Module) -> set[str]:
    """How the FP8 layers cast their inputs: {"disabled"} inside ``WhisperLoRA.decoding_mode``."""
    from lightning_asr.model import fp8

    return {layer.config.cast_config_input.scaling_type.value for layer in fp8.float8_layers(model)}


def train_steps(module: WhisperLoRA, batch: dict, steps: int, lr: float) -> list[float]:
    """Plain AdamW steps on one fixed batch; the losses, first to last."""
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    losses = []
    for _ in range(steps):
        loss = module.model(input_features=batch["input_features"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def randomize_lora_b(module: WhisperLoRA, std: float = 0.5, seed: int = 1) -> None:
    """LoRA B starts at zero, which would hide any difference in how the update is applied."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.copy_(std * torch.randn(p.shape, generator=generator))


@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_model) -> dict:
    """One collated training batch of four Common Voice clips (labels of several lengths, so padded)."""
    root = write_common_voice(tmp_path_factory.mktemp("cv"))
    dm = SpeechDataModule(model=tiny_model, path=str(root), language="mr", num_workers=0)
    dm.setup("fit")
    return dm.collate([dm.datasets["train"][i] for i in range(4)])


@pytest.fixture(scope="module")
def trained(tiny_model):
    module = tiny_module(tiny_model, quantization="int8")
    randomize_lora_b(module, std=0.05)  # a non-trivial adapter
    return module.eval()


# The console script the README tells users to type, installed beside this interpreter.
CLI = [str(Path(sys.executable).with_name("lightning-asr"))]
DEMO = str(REPO / "configs" / "demo.yaml")


def run(args: list[str], cwd: Path, timeout: int = 600, returncode: int = 0) -> subprocess.CompletedProcess:
    assert Path(CLI[0]).is_file(), f"{CLI[0]}: not installed (pip install -e .)"
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == returncode, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def user_args(*extra: str) -> list[str]:
    """The demo as a user runs it from the repository: runs/demo/version_N/ below the working folder."""
    return [
        "fit",
        "--config",
        DEMO,
        f"--model.model={REPO}/demo/whisper-tiny-random",
        f"--data.path={REPO}/demo/common_voice",
        *extra,
    ]


def sigterm_once_training(args: list[str], cwd: Path, run_dir: Path, log_path: Path) -> int:
    """``lightning-asr ARGS`` started as a user would, sent SIGTERM once TensorBoard has a training loss (training is
    under way), and waited for: its exit code. Its process group (every DDP rank) is killed whatever happened."""
    import signal
    import time

    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            CLI + args,
            cwd=cwd,
            env=os.environ | {"PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 300
            while (
                time.time() < deadline
                and proc.poll() is None
                and not any(b"train/loss" in p.read_bytes() for p in run_dir.glob("events.out.tfevents.*"))
            ):
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def demo_args(tmp_path: Path, *extra: str) -> list[str]:
    """The demo config, shortened, with every output under tmp_path."""
    return [
        "fit",
        "--config",
        DEMO,
        f"--model.model={REPO}/demo/whisper-tiny-random",
        f"--data.path={REPO}/demo/common_voice",
        f"--trainer.logger.init_args.save_dir={tmp_path}/runs",
        f"--data.cache_dir={tmp_path}/cache",
        f"--adapter_checkpoint.dirpath={tmp_path}/adapters",
        f"--trainer.default_root_dir={tmp_path}",
        *extra,
    ]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The demo command, shortened: its folder and output. Its adapter serves the later commands."""
    tmp = tmp_path_factory.mktemp("demo-run")
    out = run(
        demo_args(
            tmp,
            "--trainer.max_steps=6",
            "--trainer.val_check_interval=3",
            "--data.max_samples=8",
            "--model.decoding.max_new_tokens=8",
            "--trainer.log_every_n_steps=2",
            "--throughput.window_size=2",
        ),
        tmp,
    )
    return tmp, out


@pytest.fixture(scope="session")
def demo_adapter(demo_run) -> Path:
    return demo_run[0] / "adapters" / "last"
