"""Plain records passed between the library, the task heads and the engine (no behaviour, few imports)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset


@dataclass
class TaskData:
    """A task's prepared data: the training set, the test set and what evaluation needs besides."""
    train: Dataset
    test: Dataset | None
    attributes: list[dict] | None = None  # per test video; synthetic data only (attribute probes)
    skipped: dict[str, str] = field(default_factory=dict)  # bad video path (or id without a file) -> reason
    parts: dict[str, TaskData] = field(default_factory=dict)  # task=multi: each head's own data


@dataclass
class Similarity:
    """A retrieval evaluation's full score matrix, rows texts and columns videos, with their ids."""
    matrix: torch.Tensor  # (Q, V) float32
    text_ids: list[str]
    video_ids: list[str]


@dataclass
class EvalResult:
    """What a task's evaluation returns; the engine writes it (eval.json, predictions.json, similarity)."""
    metrics: dict[str, float]
    num_samples: int  # queries / videos / questions scored
    predictions: list[dict] = field(default_factory=list)
    similarity: Similarity | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # test video id -> why it was left out (did not load)


@dataclass
class FrameFeatures:
    """Per-frame features of a set of videos, before pooling and EMCL (what search ranks)."""
    ids: list[str]
    frames: torch.Tensor  # (N, T, D)
    mask: torch.Tensor  # (N, T)
