"""Several corpora at once (``data.sources``): each a :class:`DataSource` with a weight, drawn in proportion.

An epoch is as many draws as the weighted sources have training rows together, shared out by weight. A source drawn
more often than it has rows goes round its rows again, each pass freshly shuffled; one drawn less often continues
where the last epoch stopped, so every row is seen before any is seen twice. The draws of epoch e are a function of
(seed, e) alone: a resume at a global sample count restores every source's position with no state of its own.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from lightning_asr.data.knobs import Source
from lightning_asr.data.sources import DataConfigError


@dataclass
class DataSource:
    """One corpus of ``data.sources``.

    Args:
        name: a short name, for logs and the per-source scores (``val/<name>/wer``).
        path: as ``data.path``: a Common Voice release or archive, a manifest, a Spontaneous Speech
            folder, a dataset id.
        source: as ``data.source``.
        locale: its locale folder (Common Voice, Spontaneous Speech).
        weight: its share of the training draws, relative to the other sources'; 0 validates it without training
            on it.
        language: its transcripts' language; ``None`` is ``data.language``. Training labels carry this language's
            token, and validation decodes in it.
        train_split: its training split(s); ``None`` is ``data.train_split``.
        val_split: its validation split; ``None`` is ``data.val_split``; ``""`` validates nothing of it.
        audio_column: a manifest's or dataset's audio column.
        text_column: a manifest's or dataset's text column.
        hf_config: a dataset's config name.
    """

    name: str
    path: str
    source: Source = "common_voice"
    locale: str = "mr"
    weight: float = 1.0
    language: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    audio_column: str = "audio"
    text_column: str = "text"
    hf_config: str | None = None


def check_sources(sources: list[DataSource]) -> list[DataSource]:
    """``data.sources`` at parse time (names unique and usable as metric keys, weights non-negative, some positive);
    the sources."""
    names = [s.name for s in sources]
    for i, s in enumerate(sources):
        if not s.name or any(c in s.name for c in "/ \t"):
            raise DataConfigError(f"data.sources[{i}].name: a short name without '/' or spaces, got {s.name!r}")
        if s.name == "retain":
            raise DataConfigError(f"data.sources[{i}].name: 'retain' is data.retain's; choose another")
        if s.name in names[:i]:
            raise DataConfigError(f"data.sources[{i}].name: {s.name!r} is used twice")
        if not s.weight >= 0:
            raise DataConfigError(f"data.sources[{i}].weight ({s.name}): must be >= 0, got {s.weight}")
    if sources and not any(s.weight > 0 for s in sources):
        raise DataConfigError("data.sources: every weight is 0, so there is nothing to train on")
    return sources


class Mixture:
    """The global training order of a mixture: indices into the sources' rows laid end to end.

    Args:
        sizes: each source's training rows.
        weights: each source's weight (sources of weight 0 are never drawn).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float]) -> None:
        self.sizes, self.offsets = list(sizes), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        drawn = np.array([w if n else 0.0 for n, w in zip(sizes, weights)], dtype=np.float64)
        total = sum(n for n, w in zip(sizes, drawn) if w > 0)
        # Largest-remainder rounding: the draws add up to the epoch exactly.
        exact = total * drawn / drawn.sum() if drawn.sum() else drawn
        self.draws = np.floor(exact).astype(np.int64)
        self.draws[np.argsort(-(exact - self.draws))[: total - self.draws.sum()]] += 1

    def __len__(self) -> int:
        return int(self.draws.sum())

    def order(self, seed: int, epoch: int) -> list[int]:
        """Epoch ``epoch``'s draws, interleaved at random: the same for the same seed and epoch."""
        picks = [self._stream(i, seed, epoch) for i in range(len(self.sizes))]
        which = np.repeat(np.arange(len(self.sizes)), self.draws)
        np.random.default_rng([seed, epoch, 1]).shuffle(which)
        order = np.empty(len(which), dtype=np.int64)
        for i, rows in enumerate(picks):
            order[which == i] = rows + self.offsets[i]
        return order.tolist()

    def _stream(self, source: int, seed: int, epoch: int) -> np.ndarray:
        """Source ``source``'s rows drawn in epoch ``epoch``: its slice of an endless run of shuffled passes."""
        n, k = self.sizes[source], int(self.draws[source])
        if not k:
            return np.zeros(0, dtype=np.int64)
        start = epoch * k
        first, last = start // n, (start + k - 1) // n
        passes = [np.random.default_rng([seed, source, p]).permutation(n) for p in range(first, last + 1)]
        return np.concatenate(passes)[start - first * n : start - first * n + k]


class MixedDataset(Dataset):
    """The sources' datasets laid end to end, with their weights; an item is asked for by global index (or
    ``(index, epoch)``)."""

    def __init__(self, parts: Sequence[Dataset], weights: Sequence[float]) -> None:
        self.parts, self.weights = list(parts), list(weights)
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def mixture(self) -> Mixture:
        """The training order of these parts, drawn by weight."""
        return Mixture([len(p) for p in self.parts], self.weights)

    @property
    def draws(self) -> bool:
        return any(getattr(p, "draws", False) for p in self.parts)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: int | tuple[int, int]):
        index, epoch = key if isinstance(key, tuple) else (key, None)
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = index - int(self.offsets[part])
        return self.parts[part][local if epoch is None else (local, epoch)]
