"""Datasets over annotation rows that name a ``video_id``: decoded clips plus the row's text."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset

from multitask.data.checks import BadVideoError
from multitask.data.frame_cache import StoredClips
from multitask.data.sampler import EpochSampler
from multitask.decoding import DecodeError, DecoderSpec, process_decoder
from multitask.video import load_clip
from multitask.video_io import VideoInfo

SUBSTITUTE_ATTEMPTS = 20  # other samples tried in place of one whose video fails to load


@dataclass(frozen=True)
class Loading:
    """How clips are loaded: the decoder and its time limit, and what a video that fails does
    (``data.decoder``, ``data.decode_timeout_s``, ``data.on_bad_video``)."""
    decoder: DecoderSpec
    on_bad_video: str


class VideoLoadFailed(Exception):
    """A video that did not load (inside the dataset; ``on_bad_video`` decides what follows)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class VideoDataset(Dataset):
    """One item per row: the clip of ``row["video_id"]`` and its frame mask.

    Training draws frame offsets (and subclasses their text choices) from a generator seeded by
    (seed, epoch, index), never from a worker's or rank's state, so a global batch is the same
    whatever the number of processes or workers. Evaluation takes segment-centre frames. With ``stored``
    clips (a frame cache, or a feature cache of the frozen image tower's outputs (T, F)) every clip is read
    from them: segment-centre frames in training too (no jitter).

    A video that fails while loading (damaged past the probe, a decoder timeout or crash) stops with its
    name under ``on_bad_video=error``. Under ``skip``, a training sample is replaced by another chosen
    from (seed, epoch, index), so every process count and a resumed run see the same batch; an
    evaluation sample comes back with a zero mask for the evaluation to leave out. Every item's
    ``"failed"`` field (JSON) names the videos that failed for it.
    """

    def __init__(self, rows: datasets.Dataset, path_of: Callable[[str], str], infos: dict[str, VideoInfo],
                 num_frames: int, image_size: int, train: bool, loading: Loading, seed: int = 0,
                 augment: bool = False, stored: StoredClips | None = None) -> None:
        self.rows, self.path_of, self.infos, self.loading = rows, path_of, infos, loading
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
                                        augment=self.augment and self.train, max_seconds=max_seconds,
                                        decoder=process_decoder(self.loading.decoder))
            except DecodeError as err:
                raise VideoLoadFailed(path, str(err)) from err
        return {"video": video, "video_mask": mask}  # (T, 3, H, W), (T,)

    def _item(self, index: int) -> dict:
        """Item ``index``; raises VideoLoadFailed when its video does not load."""
        return {**self._clip(self.rows[index]["video_id"], self._rng(index)), "index": index}

    def __getitem__(self, index: int) -> dict:
        try:
            return {**self._item(index), "failed": "[]"}
        except VideoLoadFailed as failure:
            if self.loading.on_bad_video == "error":
                raise BadVideoError(f"{failure.path} failed while loading ({failure.reason}); it passed the check "
                                    "before training (first and last frames), so it is damaged in between: "
                                    "re-encode or remove it, or set data.on_bad_video=skip") from None
            return self._instead(index, [[failure.path, failure.reason]])

    def _instead(self, index: int, failed: list[list[str]]) -> dict:
        """Under ``skip``: in training another sample, drawn from (seed, epoch, index); in evaluation this
        sample with an empty frame mask (the evaluation leaves it out)."""
        if not self.train:
            blank = {"video": torch.zeros(self.num_frames, 3, self.image_size, self.image_size),
                     "video_mask": torch.zeros(self.num_frames, dtype=torch.long)}
            return {**self._blank_text(index), **blank, "index": index, "failed": json.dumps(failed)}
        draws = np.random.default_rng([self.seed, self.epoch, index, 1]).integers(len(self), size=SUBSTITUTE_ATTEMPTS)
        for other in draws.tolist():
            try:
                return {**self._item(other), "failed": json.dumps(failed)}
            except VideoLoadFailed as failure:
                failed.append([failure.path, failure.reason])
        raise BadVideoError(f"{len(failed)} videos in a row failed to load; the data looks broken: "
                            + "; ".join(f"{p}: {r}" for p, r in failed[:5]))

    def _blank_text(self, index: int) -> dict:
        """The non-video fields of an evaluation item whose video failed (subclasses add their text)."""
        return {}


class VideoTextDataset(VideoDataset):
    """Rows ``{"video_id", "captions"}`` (and optionally ``"max_seconds"``: use only the clip's start):
    one item per video with one of its captions (a random one in training, the first in evaluation)."""

    def captions(self) -> tuple[list[str], list[int]]:
        """All captions grouped by video in order, and the number per video."""
        groups = self.rows["captions"]
        return [c for group in groups for c in group], [len(group) for group in groups]

    def _item(self, index: int) -> dict:
        row, rng = self.rows[index], self._rng(index)
        captions = row["captions"]
        caption = captions[int(rng.integers(len(captions)))] if rng is not None else captions[0]
        return {**self._clip(row["video_id"], rng, row.get("max_seconds")), "text": caption, "index": index}

    def _blank_text(self, index: int) -> dict:
        return {"text": self.rows[index]["captions"][0]}


class QADataset(VideoDataset):
    """Rows ``{"video_id", "question", "answer", "category", "question_id"}``: one item per question."""

    def videos(self) -> VideoDataset:
        """The distinct videos of these questions, in first-appearance order (encoded once each)."""
        ids = list(dict.fromkeys(self.rows["video_id"]))
        rows = datasets.Dataset.from_dict({"video_id": ids})
        return VideoDataset(rows, self.path_of, self.infos, self.num_frames, self.image_size, train=False,
                            loading=self.loading, stored=self.stored)

    def _item(self, index: int) -> dict:
        row = self.rows[index]
        return {**self._clip(row["video_id"], self._rng(index)), "question": row["question"],
                "answer": row["answer"], "index": index}

    def _blank_text(self, index: int) -> dict:
        return {"question": self.rows[index]["question"], "answer": self.rows[index]["answer"]}
