"""Datasets over annotation rows that name a ``video_id``: decoded clips plus the row's text."""
from __future__ import annotations

from collections.abc import Callable

import datasets
import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset

from multitask.data.frame_cache import StoredClips
from multitask.data.sampler import EpochSampler
from multitask.video import VideoInfo, error_summary, load_clip


class VideoDataset(Dataset):
    """One item per row: the clip of ``row["video_id"]`` and its frame mask.

    Training draws frame offsets (and subclasses their text choices) from a generator seeded by
    (seed, epoch, index), never from a worker's or rank's state, so a global batch is the same
    whatever the number of processes or workers. Evaluation takes segment-centre frames. With ``stored``
    clips (a frame cache, or a feature cache of the frozen image tower's outputs (T, F)) every clip is read
    from them: segment-centre frames in training too (no jitter).
    """

    def __init__(self, rows: datasets.Dataset, path_of: Callable[[str], str], infos: dict[str, VideoInfo],
                 num_frames: int, image_size: int, train: bool, seed: int = 0, augment: bool = False,
                 stored: StoredClips | None = None) -> None:
        self.rows, self.path_of, self.infos = rows, path_of, infos
        self.num_frames, self.image_size = num_frames, image_size
        self.train, self.seed, self.augment = train, seed, augment
        self.stored = stored
        if stored is not None:
            stored.check_rows(rows)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def video_ids(self) -> list[str]:
        return list(self.rows["video_id"])

    def batch_sampler(self, batch_size: int, seed: int) -> BatchSampler:
        """Global training batches: a (seed, epoch) permutation cut into full batches."""
        return BatchSampler(EpochSampler(len(self), seed), batch_size, drop_last=True)

    def _rng(self, index: int) -> np.random.Generator | None:
        return np.random.default_rng([self.seed, self.epoch, index]) if self.train else None

    def _clip(self, video_id: str, rng: np.random.Generator | None,
              max_seconds: float | None = None) -> dict[str, torch.Tensor]:
        path = self.path_of(video_id)
        if self.stored is not None:  # segment centres; the window was checked against the cache's
            video, mask = self.stored.load(video_id, self.infos[path])
        else:
            try:
                video, mask = load_clip(path, self.infos[path], self.num_frames, self.image_size, rng,
                                        augment=self.augment and self.train, max_seconds=max_seconds)
            except Exception as err:  # decord's errors have no common base class
                raise RuntimeError(f"{path} passed the check before training (its first and last frames decode) "
                                   f"but failed to load: {error_summary(err, 200)}. "
                                   "It is damaged in between: re-encode it or remove it from the dataset") from err
        return {"video": video, "video_mask": mask}  # (T, 3, H, W), (T,)

    def __getitem__(self, index: int) -> dict:
        return {**self._clip(self.rows[index]["video_id"], self._rng(index)), "index": index}


class VideoTextDataset(VideoDataset):
    """Rows ``{"video_id", "captions"}`` (and optionally ``"max_seconds"``: use only the clip's start):
    one item per video with one of its captions (a random one in training, the first in evaluation)."""

    def captions(self) -> tuple[list[str], list[int]]:
        """All captions grouped by video in order, and the number per video."""
        groups = self.rows["captions"]
        return [c for group in groups for c in group], [len(group) for group in groups]

    def __getitem__(self, index: int) -> dict:
        row, rng = self.rows[index], self._rng(index)
        captions = row["captions"]
        caption = captions[int(rng.integers(len(captions)))] if rng is not None else captions[0]
        return {**self._clip(row["video_id"], rng, row.get("max_seconds")), "text": caption, "index": index}


class QADataset(VideoDataset):
    """Rows ``{"video_id", "question", "answer", "category", "question_id"}``: one item per question."""

    def videos(self) -> VideoDataset:
        """The distinct videos of these questions, in first-appearance order (encoded once each)."""
        ids = list(dict.fromkeys(self.rows["video_id"]))
        rows = datasets.Dataset.from_dict({"video_id": ids})
        return VideoDataset(rows, self.path_of, self.infos, self.num_frames, self.image_size, train=False,
                            stored=self.stored)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        return {**self._clip(row["video_id"], self._rng(index)), "question": row["question"],
                "answer": row["answer"], "index": index}
