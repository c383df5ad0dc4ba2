"""Encoder trimming: run Whisper's encoder over a batch's real length instead of a 30 s window.

Common Voice clips last ~5 s, so ~80 % of a 30 s window is padding the encoder still attends over.
Trimming feeds only the frames up to the batch's longest clip (``data.trim_encoder``) and slices
the sinusoidal position table to match. It changes the numerics (the model never sees the padding
it was pretrained with), so it is off by default; benchmarks/speed.py measures what it costs in WER.
"""

import types

import torch
from torch import nn


class _Prefix(nn.Module):
    """The first ``length`` rows of an embedding table, shared (no copy)."""

    def __init__(self, table: nn.Embedding, length: int) -> None:
        super().__init__()
        self.table, self.num_embeddings = table, length

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table(positions)


def enable_trimmed_encoder(model: nn.Module) -> None:
    """Let ``model``'s Whisper encoder accept mel inputs shorter than its window (any multiple of 2 frames)."""
    encoder = model.get_encoder()
    if getattr(encoder, "_trimmed", False):
        return
    full_forward = encoder.forward
    window = encoder.config.max_source_positions

    def forward(self, input_features: torch.Tensor, *args, **kwargs):
        positions = input_features.shape[-1] // (self.conv1.stride[0] * self.conv2.stride[0])
        if positions >= window:
            return full_forward(input_features, *args, **kwargs)
        table = self.embed_positions
        self.embed_positions, self.config.max_source_positions = _Prefix(table, positions), positions
        try:
            return full_forward(input_features, *args, **kwargs)
        finally:
            self.embed_positions, self.config.max_source_positions = table, window

    encoder.forward = types.MethodType(forward, encoder)
    encoder._trimmed = True
