"""Sampling: every clip once per epoch per rank, grouped by length if asked, resumable mid-epoch."""

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from lightning_asr.data.mixture import Mixture
from lightning_asr.data.sources import clip_lengths

log = logging.getLogger(__name__)


class ShardSampler(DistributedSampler):
    """A rank's share of the data, shuffled per epoch, startable mid-epoch.

    Subclassing ``DistributedSampler`` tells Lightning not to replace it. Training shards are
    padded to equal length (DDP needs the same number of steps on every rank); evaluation shards
    are not, so no clip is counted twice in WER.

    With ``lengths``, the global order is grouped by length (:func:`group_by_length`) in windows
    of ``window`` global steps. Step k of rank r takes clips ``k·W·B + r + j·W`` of it: one
    contiguous run of similar clips shared by all ranks, so trimmed batches carry little padding
    and no rank waits on a longer batch. The windows depend on W and B; ``order_for`` pins the
    W and B of a checkpoint for the epoch it resumes, so that epoch continues exactly.

    ``with_epoch`` yields ``(index, epoch)`` instead of the index: what a dataset that augments
    seeds each clip's draw with (a worker's copy of the dataset never sees ``set_epoch``).

    With ``mixture`` (several weighted sources, :class:`~lightning_asr.data.mixture.Mixture`) the epoch's shuffled
    order is the mixture's draws instead of a permutation of the dataset; the rest is the same.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        shuffle: bool,
        seed: int,
        pad: bool,
        lengths: np.ndarray | None = None,
        batch_size: int = 1,
        window: int = 64,
        with_epoch: bool = False,
        mixture: Mixture | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.pad, self.start, self.lengths, self.batch_size, self.window = pad, 0, lengths, batch_size, window
        self.order_for: tuple[int, int, int] | None = None  # (epoch, world, batch) of a resumed epoch
        self.with_epoch, self.mixture = with_epoch, mixture

    def _size(self) -> int:
        return len(self.mixture) if self.mixture is not None else len(self.dataset)

    def _shard(self) -> list[int]:
        n = self._size()
        if self.mixture is not None:
            order = self.mixture.order(self.seed, self.epoch)
        elif self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(n))
        if self.lengths is not None:
            # Training sorts within windows of up to ``window`` steps of the shuffled order (the
            # epoch stays random); evaluation sorts everything.
            world, batch = self.num_replicas, self.batch_size
            if self.order_for is not None and self.order_for[0] == self.epoch:
                world, batch = self.order_for[1:]
            step = world * batch
            # At least ~4 windows an epoch, so a small dataset is not one sorted (hence fixed) order.
            span = step * max(1, min(self.window, n // (4 * step))) if self.shuffle else max(n, 1)
            order = group_by_length(order, self.lengths, span)
        if self.pad and n % self.num_replicas:
            order += order[: self.num_replicas - n % self.num_replicas]
        return order[self.rank :: self.num_replicas]

    def resume(self, state: dict, batch_size: int) -> None:
        """Start the interrupted epoch of ``state`` (:func:`position`) at its next unseen clip."""
        # Rank r's shard is order[r::W], so the first m clips of every shard are order[:m * W]:
        # a global count resumes correctly under any world size (to within one batch).
        self.set_epoch(state["epoch"])
        self.start = state["samples"] // self.num_replicas
        # The grouped order of the interrupted epoch was cut for its world size and batch.
        self.order_for = (state["epoch"], state.get("world", self.num_replicas), state.get("batch_size", batch_size))

    def __iter__(self):
        shard = self._shard()[self.start :]
        self.start = 0
        return iter([(i, self.epoch) for i in shard] if self.with_epoch else shard)

    def __len__(self) -> int:
        n = self._size()
        if self.pad:
            return -(-n // self.num_replicas)
        return len(range(self.rank, n, self.num_replicas))


def group_by_length(order: list[int], lengths: np.ndarray, span: int) -> list[int]:
    """``order`` sorted by length, longest first, within consecutive windows of ``span`` clips;
    the window holding the longest clip goes first, so an out-of-memory shows at step 1, not
    hours in (the scheme of Hugging Face's LengthGroupedSampler).

    ``span`` should hold several global steps: a step's clips then come from one window.
    """
    order = np.asarray(order, dtype=np.int64)
    windows = [order[i : i + span] for i in range(0, len(order), span)]
    windows = [w[np.argsort(-lengths[w], kind="stable")] for w in windows]
    if not windows:
        return []
    first = max(range(len(windows)), key=lambda i: lengths[windows[i][0]])
    windows.insert(0, windows.pop(first))
    return np.concatenate(windows).tolist()


def position(trainer, batch_size: int) -> dict:
    """Where training is: its epoch and the clips of it already taken, across all ranks."""
    epochs = trainer.fit_loop.epoch_progress.current
    # Saved after an epoch's end (SIGTERM there, or the end of training) the batch count is still the
    # finished epoch's while current_epoch is already the next: that epoch starts at its first clip.
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed if epochs.started > epochs.completed else 0
    return {
        "epoch": trainer.current_epoch,
        "samples": batches * batch_size * trainer.world_size,
        "world": trainer.world_size,
        "batch_size": batch_size,
    }


def dataset_lengths(dataset: Dataset, folders: list[Path | None], name: str) -> np.ndarray:
    """A length for every row of ``dataset`` (each part's, for several sources laid end to end), for
    :func:`group_by_length`: Common Voice's ``clip_durations.tsv`` in each part's release folder where it has one."""
    start = time.perf_counter()
    parts = getattr(dataset, "parts", [dataset])
    lengths = [
        clip_lengths(part.rows, folder / "clip_durations.tsv" if folder else None)
        for part, folder in zip(parts, folders)
    ]
    log.info("group_by_length: %s lengths of %d clips in %.1f s", name, len(dataset), time.perf_counter() - start)
    return np.concatenate(lengths)
