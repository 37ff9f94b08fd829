"""Epoch order and rank sharding, shared by the tensor and the folder loaders.

Everything random about an epoch (its shuffle and its augmentation) is drawn from CPU generators
seeded by `(seed, epoch, stream)`, so an epoch is a pure function of those numbers: a run resumed at an
epoch boundary sees exactly the batches an uninterrupted run would, and CPU and GPU runs draw the same
values. Different streams keep the shuffle independent of the augmentation draws (turning augmentation
off does not change the order).

Sharding (world_size > 1): every rank draws the same permutation; global batch g is positions
`[g*B*W, (g+1)*B*W)` of it and rank r takes the r-th block of B, so `batch_size` is the per-rank batch.
The test split is not shuffled: rank r takes one contiguous block of it, keeps its last partial batch,
and the blocks of all ranks cover the test set exactly once.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

SHUFFLE, AUGMENT = 0, 1  # generator streams


def mix_seed(*keys: int) -> int:
    """A well-mixed 64-bit seed from a tuple of non-negative integers (numpy's SeedSequence hash)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def generator(*keys: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded from `keys`, e.g. `(seed, epoch, stream)`."""
    return torch.Generator().manual_seed(mix_seed(*keys))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> Tensor:
    """The epoch's sample order (int64, CPU): a seeded permutation, or 0..n-1 without shuffling."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=generator(seed, epoch, SHUFFLE))


def train_positions(n: int, batch_size: int, rank: int, world_size: int) -> Tensor:
    """(num_batches, batch_size) positions into the epoch order that rank `rank` trains on.

    The last partial global batch is dropped, so every rank has the same number of equal batches.
    """
    global_batch = batch_size * world_size
    num_batches = n // global_batch
    starts = torch.arange(num_batches) * global_batch + rank * batch_size
    return starts[:, None] + torch.arange(batch_size)[None, :]


def eval_positions(n: int, batch_size: int, rank: int, world_size: int) -> list[Tensor]:
    """This rank's contiguous block of 0..n-1 cut into batches; the last one may be partial."""
    block = math.ceil(n / world_size)
    start, stop = min(n, rank * block), min(n, (rank + 1) * block)
    return list(torch.arange(start, stop).split(batch_size))


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")


class EpochLoader:
    """What both loaders share: epoch selection, this rank's batch positions, device-side normalisation.

    Subclasses set `num_samples` and implement `__iter__`.
    """

    num_samples: int

    def __init__(self, *, batch_size: int, train: bool, seed: int, rank: int, world_size: int,
                 mean: Sequence[float], std: Sequence[float], scale: float, device: torch.device):
        check_rank(rank, world_size)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        shape = (1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        self._mul, self._add = scale / std_t, -mean_t / std_t

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        self.epoch = epoch

    def positions(self) -> list[Tensor]:
        """This rank's batches as positions into the epoch order."""
        if self.train:
            return list(train_positions(self.num_samples, self.batch_size, self.rank, self.world_size))
        return eval_positions(self.num_samples, self.batch_size, self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self.positions())

    def normalize(self, images: Tensor) -> Tensor:
        """(images * scale - mean) / std per channel, as float32."""
        return torch.addcmul(self._add, images.float(), self._mul)
