"""Shuffling samplers whose order depends only on (seed, epoch)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler

from multitask.errors import ConfigError


class EpochSampler(Sampler[int]):
    """Random permutation of range(n) drawn from (seed, epoch): identical on every process, and
    reproducible after a resume. Accelerate splits each global batch across processes."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


MIXING = ("proportional", "round_robin")


class MixedBatchSampler(BatchSampler):
    """Global batches for several datasets concatenated in one index space, each batch from one dataset.

    ``proportional``: each step draws dataset i with probability proportional to ``size_i ** (1 / temperature)``
    (temperature 1: by size; large: uniform); ``round_robin``: datasets in turn. An epoch has
    sum(size_i // batch_size) steps; each dataset's batches come from its own permutations, drawn again
    when used up. Everything depends only on (seed, epoch), so every process agrees.
    """

    def __init__(self, sizes: list[int], batch_size: int, seed: int, mixing: str = "proportional",
                 temperature: float = 1.0) -> None:
        if mixing not in MIXING:
            raise ConfigError(f"unknown task.mixing {mixing!r}; known: {', '.join(MIXING)}")
        if min(sizes) < batch_size:
            raise ConfigError(f"every dataset needs at least trainer.batch_size={batch_size} samples, got {sizes}")
        self.sizes, self.batch_size, self.drop_last = sizes, batch_size, True
        self.offsets = np.cumsum([0, *sizes[:-1]]).tolist()
        self.sampler = EpochSampler(sum(sizes), seed)  # holds the epoch; accelerate calls its set_epoch
        self.mixing, self.temperature, self.seed = mixing, temperature, seed

    def probabilities(self) -> np.ndarray:
        if self.mixing == "round_robin":
            return np.full(len(self.sizes), 1.0 / len(self.sizes))
        weights = np.asarray(self.sizes, np.float64) ** (1.0 / self.temperature)
        return weights / weights.sum()

    def __len__(self) -> int:
        return sum(n // self.batch_size for n in self.sizes)

    def _batches(self, i: int, rng: np.random.Generator) -> Iterator[list[int]]:
        while True:
            order = rng.permutation(self.sizes[i]) + self.offsets[i]
            for start in range(0, self.sizes[i] - self.batch_size + 1, self.batch_size):
                yield order[start: start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.sampler.epoch])
        streams = [self._batches(i, np.random.default_rng([self.seed, self.sampler.epoch, i]))
                   for i in range(len(self.sizes))]
        for step in range(len(self)):
            i = step % len(self.sizes) if self.mixing == "round_robin" else int(rng.choice(len(self.sizes),
                                                                                             p=self.probabilities()))
            yield next(streams[i])
