"""Datasets over rows ``{"video_id", "captions"}``: decoded clips plus one caption per item."""
from __future__ import annotations

from collections.abc import Callable

import datasets
import numpy as np
import torch
from torch.utils.data import Dataset

from multitask.video import VideoInfo, load_clip


class VideoTextDataset(Dataset):
    """One item per video: its frames, frame mask and one of its captions.

    Training picks the caption and the frame offsets from a generator seeded by
    (seed, epoch, index), never from a worker's or rank's state, so a global batch is the same
    whatever the number of processes or workers. Evaluation takes segment-centre frames.
    """

    def __init__(self, rows: datasets.Dataset, path_of: Callable[[str], str], infos: dict[str, VideoInfo],
                 num_frames: int, image_size: int, train: bool, seed: int = 0, augment: bool = False) -> None:
        self.rows, self.path_of, self.infos = rows, path_of, infos
        self.num_frames, self.image_size = num_frames, image_size
        self.train, self.seed, self.augment = train, seed, augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def video_ids(self) -> list[str]:
        return list(self.rows["video_id"])

    def captions(self) -> tuple[list[str], list[int]]:
        """All captions grouped by video in order, and the number per video."""
        groups = self.rows["captions"]
        return [c for group in groups for c in group], [len(group) for group in groups]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str | int]:
        row = self.rows[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        captions = row["captions"]
        caption = captions[int(rng.integers(len(captions)))] if rng is not None else captions[0]
        path = self.path_of(row["video_id"])
        video, mask = load_clip(path, self.infos[path], self.num_frames, self.image_size, rng,
                                augment=self.augment and self.train)
        return {"video": video, "video_mask": mask, "text": caption, "index": index}
