import sys
from pathlib import Path


def lightning_asr() -> list[str]:
    """The ``lightning-asr`` command users type, where it is installed beside this interpreter; else the
    CLI module (the GPU machine's packages are installed without console scripts)."""
    script = Path(sys.executable).with_name("lightning-asr")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lightning_asr.cli"]
