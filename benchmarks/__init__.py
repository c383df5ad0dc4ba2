import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path


def lightning_asr() -> list[str]:
    """The ``lightning-asr`` command users type, where it is installed beside this interpreter; else the
    CLI module (the GPU machine's packages are installed without console scripts)."""
    script = Path(sys.executable).with_name("lightning-asr")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lightning_asr.cli"]


def commit() -> str:
    """The commit a report names: ``BENCHMARK_COMMIT`` where set (benchmarks/device.sh sets it: the GPU machine's
    copy of the repository carries stale git metadata), else the checkout's HEAD."""
    if os.environ.get("BENCHMARK_COMMIT"):
        return os.environ["BENCHMARK_COMMIT"]
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    return head.stdout.strip()


def machine() -> str:
    """The GPU a report ran on, else the CPU (platform.processor() is empty on many Linux machines); ``BENCHMARK_MACHINE``
    where set (a report collected elsewhere from a GPU machine's work folder names that machine)."""
    import torch

    if os.environ.get("BENCHMARK_MACHINE"):
        return os.environ["BENCHMARK_MACHINE"]
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores"


def write_json(path: Path, report: object) -> None:
    """A report's data, compact: the ``.md`` beside it is what a person reads, and per-clip errors make indented JSON
    several times larger (the pre-commit hook refuses files over 250 KB)."""
    path.write_text(json.dumps(report, separators=(",", ":"), ensure_ascii=False))
