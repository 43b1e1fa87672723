"""The training set of ``task=multi``: the retrieval, caption and QA training sets in one index space."""
from __future__ import annotations

import bisect

from torch.utils.data import Dataset

from multitask.data.sampler import MixedBatchSampler
from multitask.data.video_text import VideoDataset


class MultiTaskDataset(Dataset):
    """Item i comes from the part whose index range holds i, tagged with ``"task"``; batches never mix
    parts (``batch_sampler``), so each global batch trains one head."""

    def __init__(self, parts: dict[str, VideoDataset], mixing: str = "proportional", temperature: float = 1.0) -> None:
        self.names, self.parts = list(parts), list(parts.values())
        self.starts = [0]
        for part in self.parts[:-1]:
            self.starts.append(self.starts[-1] + len(part))
        self.mixing, self.temperature = mixing, temperature

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        k = bisect.bisect_right(self.starts, index) - 1
        return {**self.parts[k][index - self.starts[k]], "task": self.names[k]}

    def batch_sampler(self, batch_size: int, seed: int) -> MixedBatchSampler:
        return MixedBatchSampler([len(p) for p in self.parts], batch_size, seed, self.mixing, self.temperature)
