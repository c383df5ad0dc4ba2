"""Training and decoding speed of the guide's recipe and of our modes, side by side, in one run.

    python -m benchmarks.speed            # GPU: whisper-large-v2 architecture, random weights
    python -m benchmarks.speed --tiny     # CPU smoke run of the same code (used by the tests)

Weights do not change step time or memory, so the large-v2 architecture is built from its config
on the device. Clips are synthetic but length-realistic (2-10 s, mean ~5 s, like Common Voice),
labels are real Marathi sentences (~90 tokens). The recipe runs as ``seed_recipe.py`` trains it
(HF Seq2SeqTrainer); every other mode runs through our WhisperLoRA / SpeechDataModule / Trainer.
Writes ``benchmarks/results/speed{-tiny}.{json,md}`` (the current result; git keeps the earlier ones).
"""

import argparse
import csv
import datetime
import gc
import json
import re
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import soundfile as sf
import torch
from transformers import GenerationConfig, TrainerCallback, WhisperConfig, WhisperForConditionalGeneration

from benchmarks import commit, write_json
from benchmarks.modes import MODES, Mode
from lightning_asr.data import SpeechDataModule
from lightning_asr.model.decode import graphed
from lightning_asr.model.knobs import Decoding, Speed
from lightning_asr.model.lora import LoRA
from lightning_asr.model.module import WhisperLoRA
from lightning_asr.model.whisper import train_flops

REPO = Path(__file__).resolve().parents[1]

TOKENIZER_FILES = [
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "generation_config.json",
]
LARGE_V2 = dict(
    d_model=1280,
    encoder_layers=32,
    decoder_layers=32,
    encoder_attention_heads=20,
    decoder_attention_heads=20,
    encoder_ffn_dim=5120,
    decoder_ffn_dim=5120,
)
TINY = dict(
    d_model=64,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
)


def matmul_peak(device: str) -> float:
    """FLOP/s of a large matrix product (bf16 on GPU, fp32 on CPU), measured here: the MFU
    denominator, from this machine in this run rather than a datasheet."""
    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (512, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


# The quality reports a config's WER verdict is read from, first match wins: the shipped configs against the guide's
# recipe, then those measured against the recipe config (itself within the bound of the recipe in quality.json).
QUALITY_REPORTS = [
    REPO / "benchmarks/results/quality.json",
    REPO / "benchmarks/results/quality-packed.json",
    REPO / "benchmarks/results/quality-packed-bf16.json",
    REPO / "benchmarks/results/quality-packed-full.json",
    REPO / "benchmarks/results/quality-small-packed.json",
    REPO / "benchmarks/results/quality-packed-nf4.json",
    REPO / "benchmarks/results/quality-packed-nf4-offload.json",
    REPO / "benchmarks/results/quality-nf4-compile.json",
    REPO / "benchmarks/results/quality-nf4-compile-b10.json",
]


def within_bound(config: str | None, reports: list[Path] = QUALITY_REPORTS) -> bool | None:
    """Whether ``config``'s WER is within the bound on every task of the first quality report that
    measured it (3 seeds; ``None`` where none did)."""
    if config is None:
        return None
    name = "recipe-config" if config == "whisper-large-v2-int8-mr" else config
    for report in filter(Path.is_file, reports):
        rows = [task["summary"].get(name) for task in json.loads(report.read_text())["tasks"].values()]
        if rows and all(row is not None and "within_bound" in row for row in rows):
            return all(row["within_bound"] for row in rows)
    return None


def build_model(folder: Path, arch: dict, device: str) -> Path:
    """A random-weight Whisper of ``arch`` saved like a hub checkpoint, with a 30 s processor."""
    demo = REPO / "demo" / "whisper-tiny-random"
    config = json.loads((demo / "config.json").read_text()) | arch | {"max_source_positions": 1500, "dtype": "bfloat16"}
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device(device):
        model = WhisperForConditionalGeneration(WhisperConfig(**config)).to(torch.bfloat16)
    model.generation_config = GenerationConfig.from_pretrained(demo)
    model.save_pretrained(folder)
    del model
    return write_processor(folder)


def write_processor(folder: Path) -> Path:
    """The demo's real multilingual tokenizer and generation config, with Whisper's standard 30 s
    feature extractor (the demo's own is a 4 s one), written into ``folder``."""
    demo = REPO / "demo" / "whisper-tiny-random"
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(demo / name, folder / name)
    for name in ("preprocessor_config.json", "processor_config.json"):
        cfg = json.loads((demo / name).read_text())
        cfg.get("feature_extractor", cfg).update(chunk_length=30, n_samples=480000, nb_max_frames=3000)
        (folder / name).write_text(json.dumps(cfg))
    return folder


def make_clips(folder: Path, n: int, seed: int = 0) -> tuple[Path, float]:
    """``n`` wav clips, 2-10 s (mean ~5 s), each with a ~90-token Marathi transcript; a jsonl manifest."""
    rng = np.random.default_rng(seed)
    with open(REPO / "demo/common_voice/mr/train.tsv") as f:
        sentences = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    folder.mkdir(parents=True, exist_ok=True)
    durations = np.clip(rng.gamma(6.0, 5.0 / 6.0, n), 2.0, 10.0)
    with open(folder / "clips.jsonl", "w") as f:
        for i, seconds in enumerate(durations):
            audio = 0.1 * rng.standard_normal(int(seconds * 16000)).astype(np.float32)
            sf.write(folder / f"{i}.wav", audio, 16000)
            text = " ".join(rng.choice(sentences, 3))
            f.write(json.dumps({"audio": f"{i}.wav", "text": text}, ensure_ascii=False) + "\n")
    return folder / "clips.jsonl", float(durations.mean())


class StepTimer(L.Callback):
    """Times ``steps`` steps after ``warmup`` (device-synchronised), counting samples, audio seconds
    and FLOPs; then profiles ``profile_steps`` more (kept out of the timing)."""

    def __init__(self, warmup: int, steps: int = 10**9, profile_steps: int = 0) -> None:
        self.warmup, self.steps, self.profile_steps = warmup, steps, profile_steps
        self.start, self.seconds, self.samples, self.audio, self.flops, self.rows = None, None, 0, 0.0, 0, 0
        self.profiler, self.profile = None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        step = trainer.global_step
        if step == self.warmup:
            self.start = time.perf_counter()
        elif self.warmup < step <= self.warmup + self.steps:
            self.samples += batch.get("clips", len(batch["paths"]))  # clips: a packed window holds several
            self.rows += len(batch["paths"])
            self.audio += float(batch["durations"].sum())
            self.flops += pl_module.flops_per_batch or 0
            if step == self.warmup + self.steps:
                self.seconds = time.perf_counter() - self.start
                if self.profile_steps:
                    self.profiler = start_profiler()
        elif self.profiler is not None and step == self.warmup + self.steps + self.profile_steps:
            self.profile, self.profiler = stop_profiler(self.profiler, self.profile_steps), None

    def result(self) -> dict:
        seconds = self.seconds or time.perf_counter() - self.start
        row = {
            "samples_per_s": self.samples / seconds,
            "audio_s_per_s": self.audio / seconds,
            "flops_per_s": self.flops / seconds,
            "clips_per_window": self.samples / max(self.rows, 1),
        }
        return row | ({"profile": self.profile} if self.profile else {})


# Kernel name patterns, first match wins: where a step's GPU time goes.
KERNEL_KINDS = [
    ("bitsandbytes", r"4bit|dequant|quant|int8|igemm|kbit"),
    ("attention", r"flash|fmha|attention|softmax"),
    ("matmul", r"gemm|cutlass|xmma|nvjet|cublas|matmul|sm90_"),
    ("nccl", r"nccl"),
]


def start_profiler() -> torch.profiler.profile:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities)
    profiler.start()
    profiler.wall_start = time.perf_counter()
    return profiler


def stop_profiler(profiler: torch.profiler.profile, steps: int) -> dict:
    """Per step: wall time, GPU busy time (sum of kernel times), kernel launches, and busy time by
    kernel kind. Busy far under wall means the GPU waits on the host (launches, Python)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - profiler.wall_start
    profiler.stop()
    try:
        events = profiler.key_averages()
        # record_function ranges (Optimizer.step, DDP.forward) also show device time: leave them out.
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation]
        host = sorted(
            (e for e in events if e.device_type == torch.autograd.DeviceType.CPU and not e.is_user_annotation),
            key=lambda e: -e.self_cpu_time_total,
        )[:8]
        host = [[e.key[:60], round(e.self_cpu_time_total / 1e3 / steps, 2), e.count // steps] for e in host]
    except Exception as err:  # a profiler API change must not cost the timings
        return {"error": repr(err)[:300]}
    ms = {e.key: e.self_device_time_total / 1e3 / steps for e in kernels}
    kinds = dict.fromkeys([k for k, _ in KERNEL_KINDS] + ["other"], 0.0)
    for name, t in ms.items():
        kinds[next((k for k, pattern in KERNEL_KINDS if re.search(pattern, name, re.IGNORECASE)), "other")] += t
    busy = sum(ms.values())
    return {
        "steps": steps,
        "wall_ms": 1e3 * wall / steps,
        "gpu_busy_ms": busy,
        "busy_fraction": busy / (1e3 * wall / steps),
        "kernels": sum(e.count for e in kernels) / steps,
        "kinds_ms": kinds,
        "top": [[name[:90], round(t, 2)] for name, t in sorted(ms.items(), key=lambda kv: -kv[1])[:6]],
        "host_top": host,
    }


class HFStepTimer(TrainerCallback):
    def __init__(self, warmup: int, batch_size: int, mean_audio: float) -> None:
        self.warmup, self.batch_size, self.mean_audio, self.start, self.steps = warmup, batch_size, mean_audio, None, 0

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        elif state.global_step > self.warmup:
            self.steps += 1

    def result(self) -> dict:
        seconds = time.perf_counter() - self.start
        samples = self.steps * self.batch_size
        return {"samples_per_s": samples / seconds, "audio_s_per_s": samples * self.mean_audio / seconds}


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def reset() -> None:
    # Each mode compiles as a fresh process would: the compiled layers of earlier modes share their code objects
    # (Whisper's layer forwards), and their cache entries would count toward dynamo's recompile limit here. With
    # four compiled modes before it, the compiled nf4 mode failed checkpointing's recompute (2026-12-06, H200);
    # alone in its process it trained (benchmarks/README.md).
    torch._dynamo.reset()
    gc.collect()  # the previous mode's trainer/model cycle would otherwise count in this mode's peak
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_recipe(model_dir: Path, manifest: Path, steps: int, warmup: int, mean_audio: float, out: Path) -> dict:
    from transformers import WhisperProcessor

    from benchmarks import seed_recipe
    from lightning_asr.data.sources import manifest_index

    processor = WhisperProcessor.from_pretrained(model_dir, language="Marathi", task="transcribe")
    rows = manifest_index(str(manifest))[0].slice(0, 8 * (steps + warmup)).to_pylist()
    dataset = seed_recipe.prepare(processor, rows)
    reset()
    model = seed_recipe.build_model(str(model_dir))
    model.train()  # as HF Trainer does; explicit so the recipe and ours start alike
    timer = HFStepTimer(warmup, 8, mean_audio)
    trainer = seed_recipe.make_trainer(model, processor, dataset, str(out), max_steps=steps + warmup, callbacks=[timer])
    trainer.train()
    flops = train_flops(model.config, (8, 80, 3000), 90) / 8  # per sample
    result = timer.result() | {"peak_gib": peak_gib()}
    result["flops_per_s"] = flops * result["samples_per_s"]
    del trainer, model
    return result


def lightning_parts(
    mode: Mode,
    model_dir: Path,
    manifest: Path,
    eval_batch_size: int = 128,
    decoding: Decoding | None = None,
    group_window: int = 64,
):
    speed = Speed(
        mode.gradient_checkpointing, mode.trim_encoder, mode.compile, mode.cudnn_attention, mode.offload, mode.fp8
    )
    decoding = Decoding(max_new_tokens=96) if decoding is None else decoding
    module = WhisperLoRA(
        model=str(model_dir),
        language="mr",
        quantization=mode.quantization,
        speed=speed,
        lora=LoRA(encoder=not mode.frozen_encoder),
        validate_before_training=False,
        decoding=decoding,
    )
    data = SpeechDataModule(
        source="manifest",
        path=str(manifest),
        model=str(model_dir),
        language="mr",
        batch_size=mode.batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=8,
        trim_encoder=mode.trim_encoder,
        group_by_length=mode.group,
        group_window=group_window,
        pack_share=mode.pack_share,
        pack_clips=mode.pack_clips,
        processor=module.processor,
    )
    return module, data


def quiet_trainer(mode: Mode, accelerator: str, devices: int = 1, **kwargs) -> L.Trainer:
    """A Trainer that does only the run: no logger, checkpoints, progress bar or model summary."""
    precision = mode.precision if accelerator == "gpu" else "32-true"
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def run_mode(
    mode: Mode, model_dir: Path, manifest: Path, steps: int, warmup: int, accelerator: str, profile_steps: int = 2
) -> dict:
    reset()
    # Windows of --warmup steps: the warm-up takes the longest window (grouped order puts it first)
    # and the timed steps average whole windows after it, not the longest batches.
    module, data = lightning_parts(mode, model_dir, manifest, group_window=warmup)
    timer = StepTimer(warmup, steps, profile_steps)
    trainer = quiet_trainer(
        mode, accelerator, max_steps=steps + warmup + profile_steps, limit_val_batches=0, callbacks=[timer]
    )
    torch.backends.cuda.matmul.allow_tf32 = mode.tf32
    try:
        trainer.fit(module, data)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    return timer.result() | {"peak_gib": peak_gib()}


def run_decode(
    mode: Mode, model_dir: Path, manifest: Path, clips: int, batch_size: int, accelerator: str, decoding: Decoding
) -> dict:
    """Validation (generate + WER) over ``clips`` clips through our module; random weights never stop
    early, so every clip decodes ``decoding.max_new_tokens`` tokens: the worst case."""
    reset()
    module, data = lightning_parts(mode, model_dir, manifest, batch_size, decoding)
    data.hparams.max_samples = clips
    loop = LoopTimer()
    trainer = quiet_trainer(mode, accelerator, callbacks=[loop])
    warm = quiet_trainer(mode, accelerator, limit_val_batches=1)
    warm.validate(module, data)  # warm-up: model load, kernel selection
    start = time.perf_counter()
    trainer.validate(module, data)
    call = time.perf_counter() - start
    row = {
        "clips": clips,
        "seconds": loop.seconds,
        "seconds_per_1000": 1000 * loop.seconds / clips,
        "validate_call_s": call,
        "peak_gib": peak_gib(),
        "tokens_per_s": clips * decoding.max_new_tokens / loop.seconds,
        "first_batch_wait_s": loop.waits[0],
        "data_wait_s": sum(loop.waits),
        "batch_s": loop.batches,
    }
    # Then one batch profiled, per token step: the second, past the workers' start, where there is
    # one. 16 steps only: a profile of 96 token steps holds ~400k kernel events, and summarising
    # them outlasted a 10-minute device call.
    module.decoding.max_new_tokens = PROFILED_TOKENS
    profiled = LoopTimer(profile_batch=int(clips > batch_size))
    quiet_trainer(mode, accelerator, limit_val_batches=2, callbacks=[profiled]).validate(module, data)
    return row | {"profile": profiled.profile}


class LoopTimer(L.Callback):
    """Times the validation loop alone: a stand-alone ``validate()`` also moves the model onto the
    GPU and back to the CPU (Lightning's teardown), which fit's validations never do. Runs 1-7b
    timed and profiled the whole call; their "per token step" device-to-host copies were that
    teardown. Per batch it keeps the wait for data and the compute. With ``profile_batch`` it
    profiles that batch alone: the second one shows the steady state, where the first also waits
    for fresh workers to build their batches."""

    def __init__(self, profile_batch: int | None = None) -> None:
        self.profile_batch, self.profiler, self.profile, self.seconds = profile_batch, None, None, None
        self.waits: list[float] = []  # per batch: from the previous batch's end (or the loop's start) to its start
        self.batches: list[float] = []  # per batch: its validation_step, device-synchronised

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.start = self.last = time.perf_counter()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.waits.append(time.perf_counter() - self.last)
        if batch_idx == self.profile_batch:
            self.profiler = start_profiler()
        self.batch_start = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.last = time.perf_counter()
        self.batches.append(self.last - self.batch_start)
        if self.profiler is not None:
            self.profile, self.profiler = stop_profiler(self.profiler, PROFILED_TOKENS), None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


PROFILED_TOKENS = 16


class Decode(NamedTuple):
    """A validation run: the training mode whose module decodes, and its model.decoding settings."""

    mode: str
    batch: int
    tokens: int  # max_new_tokens
    merge_lora: bool
    method: str
    cuda_graph: bool = True

    @property
    def decoding(self) -> Decoding:  # model.decoding for this run
        return Decoding(self.method, self.tokens, self.merge_lora, self.cuda_graph)


DECODES = {
    key: Decode(*row)
    for key, row in {
        "recipe": ("ours-recipe", 8, 32, False, "generate"),
        "bf16": ("bf16-trim-gc-b128", 128, 96, False, "generate"),
        "bf16-merged-b128": ("bf16-trim-gc-b128", 128, 96, True, "generate"),
        "bf16-merged-b256": ("bf16-trim-gc-b128", 256, 96, True, "generate"),
        "bf16-merged-b512": ("bf16-trim-gc-b128", 512, 96, True, "generate"),
        "bf16-static-b128": ("bf16-trim-gc-b128", 128, 96, False, "static"),
        "bf16-static-b256": ("bf16-trim-gc-b128", 256, 96, False, "static"),
        "bf16-static-merged-b256": ("bf16-trim-gc-b128", 256, 96, True, "static"),
        "bf16-static-b512": ("bf16-trim-gc-b128", 512, 96, False, "static"),
        "bf16-static-b256-untrimmed": ("bf16-gc-b32-compile", 256, 96, False, "static"),
        "bf16-static-merged-b128-untrimmed": (
            "bf16-gc-b32-compile",
            128,
            96,
            True,
            "static",
        ),  # frozen-bf16's validation
        "bf16-static-merged-b64-untrimmed": ("bf16-gc-b32-compile", 64, 96, True, "static"),  # packed-bf16's validation
        "bf16-static-merged-b128": ("bf16-trim-gc-b128", 128, 96, True, "static"),
        # k-bit bases, one batch each where they decode eagerly (the recipe's base, and nf4 trimmed; nf4 static was
        # eager until 2026-12-06)
        "int8-b64": ("ours-recipe", 64, 96, False, "generate"),
        "int8-static-b64": ("ours-recipe", 64, 96, False, "static"),
        "nf4-b64": ("nf4-trim-gc-b8", 64, 96, False, "generate"),
        "nf4-static-b64": ("nf4-trim-gc-b8", 64, 96, False, "static"),
        # the memory-bound configs' validation batches: does validation keep their training peak?
        "bf16-static-b16": ("bf16-trim-gc-b128", 16, 96, False, "static"),
        "bf16-static-b32": ("bf16-trim-gc-b128", 32, 96, False, "static"),
        "nf4-static-b8": ("nf4-trim-gc-b8", 8, 96, False, "static"),
        "nf4-static-b16": ("nf4-trim-gc-b8", 16, 96, False, "static"),
        # the small-memory packed candidates' validation at their eval batches (30 s windows)
        "bf16-static-b8-untrimmed": ("bf16-gc-b32-compile", 8, 96, False, "static"),
        "bf16-static-b4-untrimmed": ("bf16-gc-b32-compile", 4, 96, False, "static"),
        "nf4-static-b8-untrimmed": ("nf4-gc-b8-packed-dense", 8, 96, False, "static"),
        "nf4-static-b2-untrimmed": (
            "nf4-gc-b8-packed-dense",
            2,
            96,
            False,
            "static",
        ),  # packed-dense-nf4-offload's validation
        "nf4-static-b4-untrimmed": ("nf4-gc-b8-packed-dense", 4, 96, False, "static"),
        # nf4's token step as a CUDA graph against the eager steps it replaced, at the nf4 candidates' eval batches
        "nf4-static-b2-untrimmed-eager": ("nf4-gc-b8-packed-dense", 2, 96, False, "static", False),
        "nf4-static-b8-untrimmed-eager": ("nf4-gc-b8-packed-dense", 8, 96, False, "static", False),
    }.items()
}


def decode_title(key: str) -> str:
    """A decode's row title in the report, from what DECODES says it runs."""
    d = DECODES[key]
    mode = next(m for m in MODES if m.name == d.mode)
    if key == "recipe":
        return f"recipe-eval: {mode.quantization}, batch {d.batch}, {d.tokens} new tokens"
    base = "bf16" if mode.quantization == "none" else mode.quantization
    parts = [base, "trimmed, length-sorted" if mode.trim_encoder else "30 s windows"]
    parts += ["static decoding"] * (d.method == "static") + ["no CUDA graph"] * (
        d.method == "static" and not d.cuda_graph
    )
    parts += ["LoRA merged"] * d.merge_lora
    return ", ".join([*parts, f"batch {d.batch}", f"{d.tokens} new tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script, measures nothing")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per mode (a multiple of --warmup)")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--profile-steps", type=int, default=2, help="steps profiled after the timed ones")
    parser.add_argument("--modes", nargs="*", default=[m.name for m in MODES])
    parser.add_argument("--skip-recipe", action="store_true")
    parser.add_argument("--decode", nargs="*", default=list(DECODES), choices=list(DECODES))
    parser.add_argument("--decode-clips", type=int, default=1000)
    parser.add_argument("--commit", help="commit to name in the report where .git is absent (the GPU machine)")
    parser.add_argument("--work", default="/tmp/speed")
    parser.add_argument("--results", default=str(REPO / "benchmarks/results"))
    parser.add_argument(
        "--name", default="speed", help="results file stem (speed-frozen: issue 18's frozen-encoder run)"
    )
    parser.add_argument("--merge", nargs="*", help="merge these report JSONs (runs split over GPUs) into --results")
    parser.add_argument(
        "--list-decodes", action="store_true", help="print each --decode name and its report title, as JSON"
    )
    args = parser.parse_args()
    if args.list_decodes:
        return print(json.dumps({key: decode_title(key) for key in DECODES}, indent=1))
    if args.merge:
        return merge([json.loads(Path(f).read_text()) for f in args.merge], Path(args.results), args.name)
    work = Path(args.work)
    accelerator = "cpu" if args.tiny else "gpu"
    device = "cpu" if args.tiny else "cuda"
    if args.tiny:
        args.steps, args.warmup, args.decode_clips = 2, 1, 12  # two decode batches: the second is profiled
    model_dir = build_model(work / "model", TINY if args.tiny else LARGE_V2, device)
    batches = args.steps + args.warmup + args.profile_steps + 1
    manifest, mean_audio = make_clips(work / "clips", max(args.decode_clips, (16 if args.tiny else 128) * batches))
    peak_flops = matmul_peak(device)
    report = {
        "machine": torch.cuda.get_device_name() if not args.tiny else "cpu (tiny smoke run)",
        "date": datetime.date.today().isoformat(),
        "arch": "tiny" if args.tiny else "whisper-large-v2",
        "commit": args.commit or commit(),
        "command": " ".join(["python -m benchmarks.speed", *sys.argv[1:]]),
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "mean_clip_s": mean_audio,
        "peak_matmul_flops": peak_flops,
        "train": {},
        "decode": {},
    }
    results = Path(args.results)
    if not args.skip_recipe:
        report["train"]["recipe"] = run_recipe(
            model_dir, manifest, args.steps, args.warmup, mean_audio, work / "recipe"
        ) | {"tradeoff": "the guide: int8 + checkpointing + fp16, batch 8, 30 s windows (HF Seq2SeqTrainer)"}
        print("recipe", report["train"]["recipe"], flush=True)
        write(report, results, args.tiny, args.name)
    for mode in MODES:
        if mode.name in args.modes:
            try:
                report["train"][mode.name] = run_mode(
                    mode, model_dir, manifest, args.steps, args.warmup, accelerator, args.profile_steps
                ) | {"tradeoff": mode.tradeoff, "config": mode.config}
            except Exception as err:  # one broken mode must not cost the others' numbers
                report.setdefault("errors", {})[mode.name] = repr(err)[:500]
                print(mode.name, "FAILED", repr(err)[:500], flush=True)
                traceback.print_exc()  # the log keeps the whole error; the report keeps its head
                continue
            print(mode.name, report["train"][mode.name], flush=True)
            write(report, results, args.tiny, args.name)
    by_name = {m.name: m for m in MODES}
    for key in args.decode:
        d = DECODES[key]
        # Eager k-bit decodes run one batch (1,000 clips through the recipe's int8 would take minutes), graphed nf4 8
        quantization = by_name[d.mode].quantization
        batches = 8 if graphed(d.method, d.cuda_graph, quantization) else 1
        clips = args.decode_clips if quantization == "none" else min(args.decode_clips, d.batch * batches)
        batch = min(d.batch, 8) if args.tiny else d.batch
        try:
            report["decode"][key] = run_decode(
                by_name[d.mode], model_dir, manifest, clips, batch, accelerator, d.decoding
            ) | {"title": decode_title(key)}
        except Exception as err:  # e.g. out of memory at batch 512: keep the other decodes
            report.setdefault("errors", {})[key] = repr(err)[:500]
            print(key, "FAILED", repr(err)[:500], flush=True)
            continue
        print(key, report["decode"][key], flush=True)
        write(report, results, args.tiny, args.name)


def merge(reports: list[dict], results: Path, name: str = "speed") -> None:
    """One report from runs of the same command split over the GPUs of one machine (or one report,
    written again with the current quality result's bounds)."""
    merged = reports[0] | {"train": {}, "decode": {}, "parts": len(reports)}
    for report in reports:
        merged["train"] |= report["train"]
        merged["decode"] |= report["decode"]
        merged.setdefault("errors", {}).update(report.get("errors", {}))
    merged["train"] = (
        {"recipe": merged["train"].pop("recipe")} | merged["train"] if "recipe" in merged["train"] else merged["train"]
    )
    write(merged, results, False, name)


def write(report: dict, results: Path, tiny: bool, name: str = "speed") -> None:
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"{name}{'-tiny' if tiny else ''}"
    base = report["train"].get("recipe", {}).get("samples_per_s")
    for row in report["train"].values():
        if "samples_per_s" not in row:
            continue
        row.setdefault("flops_per_s", 0)
        row["vs_recipe"] = row["samples_per_s"] / base if base else None
        row["mfu"] = row["flops_per_s"] / report["peak_matmul_flops"] if report.get("peak_matmul_flops") else None
        row["gpu_busy"] = row.get("profile", {}).get("busy_fraction")
        if row.get("config"):  # quality runs often finish after the speed run: the bound as of this writing
            row["wer_within_bound"] = within_bound(row["config"])
    write_json(stem.with_suffix(".json"), report)
    peak = (
        f"{report['peak_matmul_flops'] / 1e12:.0f} TFLOP/s" if report.get("peak_matmul_flops") else "no measured peak"
    )
    split = (
        f" Run as {report['parts']} processes, one per GPU of the machine, at the same time."
        if report.get("parts", 1) > 1
        else ""
    )
    lines = [
        f"# Speed: {report['arch']} LoRA r=32, {report['machine']}, {report['date']}",
        "",
        f"Commit {report['commit']}, torch {report['torch']}; {report['steps']} timed steps after {report['warmup']} warm-up; "
        f"synthetic clips 2-10 s (mean {report['mean_clip_s']:.1f} s), ~90-token Marathi labels. "
        f"Command: `{report.get('command', 'python -m benchmarks.speed')}`.{split} MFU: against {peak} measured on one large matrix "
        "product in this run. Throughput, not time to accuracy (benchmarks/tta.py): × recipe is clips a second. WER "
        "within bound at equal steps: the config's result in the first quality report that measured it, at 300 "
        f"optimizer steps, which give a larger batch more data ({', then '.join(p.name for p in QUALITY_REPORTS)}; "
        "3 seeds, both tasks).",
        "",
        "| mode | config | samples/s | audio s/s | peak GiB | GPU busy | MFU | × recipe, clips/s | WER within bound at 300 steps | trade-off |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["train"].items():
        if "samples_per_s" not in r:
            continue
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "–"
        busy = f"{100 * r['gpu_busy']:.0f} %" if r.get("gpu_busy") is not None else "–"
        ratio = f"{r['vs_recipe']:.1f}×" if r["vs_recipe"] else "–"
        bound = {True: "yes", False: "**no**"}.get(r.get("wer_within_bound"), "–")
        config = f"`{r['config']}`" if r.get("config") else "–"
        lines.append(
            f"| {name} | {config} | {r['samples_per_s']:.2f} | {r['audio_s_per_s']:.1f} | {r['peak_gib']:.2f} | {busy} | "
            f"{mfu} | {ratio} | {bound} | {r['tradeoff']} |"
        )
    lines += [
        "",
        (
            "| decoding (validation loop: decode + WER; random weights never stop early) | clips | s per 1,000 clips "
            "| of which waiting for data, s (first batch) | whole validate() call, s | tokens/s | peak GiB |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["decode"].items():
        name = r.get("title", name)
        call = f"{r['validate_call_s']:.1f}" if "validate_call_s" in r else "–"
        wait = f"{r['data_wait_s']:.2f} ({r['first_batch_wait_s']:.2f})" if "data_wait_s" in r else "–"
        lines.append(
            f"| {name} | {r['clips']} | {r['seconds_per_1000']:.1f} | {wait} | {call} | {r['tokens_per_s']:.0f} "
            f"| {r['peak_gib']:.2f} |"
        )
    profiles = {
        name: r["profile"]
        for name, r in {**report["train"], **report["decode"]}.items()
        if "wall_ms" in r.get("profile", {})
    }
    if profiles:
        kinds = list(next(iter(profiles.values()))["kinds_ms"])
        lines += [
            "",
            (
                "Profiles (torch.profiler, steps after the timed ones; decoding: one validation batch of 16 new tokens "
                "after the timed run, the second where there are two, per token step, encoder and WER included). GPU busy = summed kernel time; where it is far "
                "under wall time the GPU waits on the host."
            ),
            "",
            "| profile | wall ms | GPU busy ms | busy | kernels | "
            + " | ".join(f"{k} ms" for k in kinds)
            + " | top kernel |",
            "|---|---|---|---|---|" + "---|" * len(kinds) + "---|",
        ]
        for name, p in profiles.items():
            top = f"{p['top'][0][0][:50]} ({p['top'][0][1]:.1f} ms)" if p["top"] else "–"
            lines.append(
                f"| {name} | {p['wall_ms']:.1f} | {p['gpu_busy_ms']:.1f} | {100 * p['busy_fraction']:.0f} % | "
                f"{p['kernels']:.0f} | " + " | ".join(f"{p['kinds_ms'][k]:.1f}" for k in kinds) + f" | {top} |"
            )
    if report.get("errors"):  # a failed mode is a result too: the reader must not take its absence for "not run"
        lines += ["", "Failed (error as raised, cut to 500 characters):", ""]
        lines += [f"- {name}: `{' '.join(err.split())}`" for name, err in report["errors"].items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
