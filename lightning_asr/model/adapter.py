"""The adapter folder: written atomically, read back with its files checked. One format, one file.

A folder holds ``adapter_model.safetensors`` + ``adapter_config.json`` (plain PEFT, loadable with
``PeftModel.from_pretrained(base, path)``), the processor files, and ``lightning_asr.json`` with
what the module says the adapter was trained for (its ``adapter_record()``) and the metrics it was
saved with.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import torch
from safetensors import safe_open

from lightning_asr.model.whisper import resolve_model


def save_adapter(pl_module: L.LightningModule, path: Path, metrics: dict | None = None) -> None:
    """Write a self-contained adapter folder atomically: a crash mid-write leaves the old one intact.

    The folder holds ``adapter_model.safetensors`` + ``adapter_config.json`` (plain PEFT, loadable
    with ``PeftModel.from_pretrained(base, path)``), the processor files, and ``lightning_asr.json``
    with the language, task and base the adapter was trained for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write_adapter(pl_module, tmp, metrics)
    except BaseException:  # a full disk or a kill: leave no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _write_adapter(pl_module: L.LightningModule, folder: Path, metrics: dict | None) -> None:
    # What the module says the adapter was trained for (base, language, task, quantization …).
    info = pl_module.adapter_record() | {"global_step": pl_module.global_step, "metrics": metrics or {}}
    # An absolute base path, so the adapter loads from any working directory; a hub id stays an id.
    base = info["base_model"] = resolve_model(info["base_model"])
    config = pl_module.model.peft_config["default"]
    # PEFT records the folder the base was loaded from: for a base built from its config, a
    # temporary folder that is gone by now.
    recorded, config.base_model_name_or_path = config.base_model_name_or_path, base
    try:
        pl_module.model.save_pretrained(folder)
    finally:
        config.base_model_name_or_path = recorded
    pl_module.processor.save_pretrained(folder)
    (folder / "lightning_asr.json").write_text(json.dumps(info, indent=2))


def adapter_info(adapter: str) -> dict:
    """What an adapter folder says about its training (base, language, task, quantization), after
    checking that its files are whole: a cut or garbled file is named here, before a base loads."""
    folder = Path(adapter)
    config_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_file.is_file():
        raise FileNotFoundError(f"{adapter}: not an adapter folder (no adapter_config.json)")
    config = _read_json(config_file)
    if weights.is_file():
        check_weights(weights)
    elif not (folder / "adapter_model.bin").is_file():
        raise FileNotFoundError(f"{adapter}: no adapter_model.safetensors")
    info_file = folder / "lightning_asr.json"
    if info_file.is_file():
        return _read_json(info_file)
    return {"base_model": config.get("base_model_name_or_path")}


# A trained LoRA weight is of order 0.01-1: a value past this is a damaged file, not a training's outcome.
LARGEST_WEIGHT = 1e4


def check_weights(weights: Path) -> None:
    """Raise where ``weights`` cannot be read whole, or holds values no training writes (random bytes over part of the
    file still parse: its header and offsets survive)."""
    try:
        with safe_open(weights, "pt") as f:  # checks that the header's offsets cover the file
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                tensor = f.get_tensor(name).float()
                bad = int((~torch.isfinite(tensor)).sum())
                largest = float(tensor.nan_to_num(0.0, 0.0, 0.0).abs().max()) if tensor.numel() else 0.0
                if bad or largest > LARGEST_WEIGHT:
                    what = f"{bad} non-finite values" if bad else f"values up to {largest:.3g}"
                    raise ValueError(
                        f"{weights}: {name} holds {what}, which no training writes: the file is "
                        "damaged; use another checkpoint of the run or save the adapter again"
                    )
    except ValueError:
        raise
    except Exception as err:  # safetensors raises its own error types, and OSError
        raise ValueError(f"{weights}: not a readable safetensors file ({err}); save the adapter again") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
