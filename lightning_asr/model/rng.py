"""The RNG states a checkpoint carries, so that a resumed run draws the same numbers (LoRA dropout,
SpecAugment's masks, shuffling)."""

import random

import numpy as np
import torch


def rng_states() -> dict:
    """Every RNG that training draws from (LoRA dropout, shuffling), as types that
    ``torch.load(weights_only=True)`` accepts, so a resumed run draws the same numbers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
