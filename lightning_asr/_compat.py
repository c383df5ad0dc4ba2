"""Module paths from before the layers had folders, kept importable.

Checkpoints pickle their knobs by module path (``lightning_asr.args.Speed``), and user code and configs written
against 0.1 name ``lightning_asr.module.WhisperLoRA`` or ``lightning_asr.audio.load_audio``. Each old path resolves,
on first import, to the module that now holds its names; nothing is imported before it is asked for.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys

# old module -> the modules that hold its names now (``augment`` was split into its model and data halves)
MOVED = {
    "module": ("model.module",),
    "args": ("model.knobs",),
    "whisper": ("model.whisper",),
    "decode": ("model.decode",),
    "lora": ("model.lora",),
    "loss": ("model.loss",),
    "trim": ("model.trim",),
    "offload": ("model.offload",),
    "fp8": ("model.fp8",),
    "optim": ("model.optim",),
    "metrics": ("model.metrics",),
    "rng": ("model.rng",),
    "adapter": ("model.adapter",),
    "dataset": ("data.dataset", "data.windows", "batch"),
    "sources": ("data.sources",),
    "sampling": ("data.sampling",),
    "audio": ("data.audio", "batch"),
    "tools": ("deploy.transcribe",),
    "longform": ("deploy.longform", "batch"),
    "export": ("deploy.export",),
    "augment": ("model.spec_augment", "data.transforms"),
}


class _Alias(importlib.abc.Loader):
    def __init__(self, targets: tuple[str, ...]) -> None:
        self.targets = targets

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a plain module: filled, or replaced, in exec_module

    def exec_module(self, module) -> None:
        found = [importlib.import_module(f"lightning_asr.{target}") for target in self.targets]
        if len(found) == 1:  # the import system returns what sys.modules holds once this returns
            sys.modules[module.__name__] = found[0]
            return
        for target in reversed(found):  # the first target's names win
            module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})


class OldPaths(importlib.abc.MetaPathFinder):
    """Consulted after the real finders: only a path that no longer exists reaches it."""

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        old = fullname.removeprefix("lightning_asr.")
        if old == fullname or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(MOVED[old]))


def install() -> None:
    if not any(isinstance(finder, OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(OldPaths())
