"""The task interface and the registry the task heads fill.

A task is an ``nn.Module`` over one backbone and one EMCL bridge (shared between the heads of
``task=multi``): ``forward(batch)`` returns a dict whose ``"loss"`` is the sum of the terms ending in
``_loss``; ``evaluate(...)`` returns an ``EvalResult``, which the engine writes. The library never
imports the heads: they register a builder with ``register_task``, and ``build_task`` imports the
packages named in ``HEAD_PACKAGES`` (``tasks``, and any a user appends) the first time it is asked.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch import nn

from multitask.backbone import VideoTextBackbone, build_backbone
from multitask.emcl import EMCL, build_emcl
from multitask.errors import ConfigError
from multitask.types import EvalResult, TaskData

Shared = tuple[VideoTextBackbone, "EMCL | None"]
TaskBuilder = Callable[[dict, "TaskData | None", "Path | None", Shared], "Task"]

TASKS: dict[str, TaskBuilder] = {}
HEAD_PACKAGES: list[str] = ["tasks"]  # imported by build_task; each module registers its builders


class Task(nn.Module):
    """What the engine, the optimizer and the API rely on."""

    name: ClassVar[str] = ""
    serves: ClassVar[tuple[str, ...]] = ()  # the heads that ``multitask.load`` users may ask of it

    def __init__(self, backbone: VideoTextBackbone, emcl: EMCL | None) -> None:
        super().__init__()
        self.backbone, self.emcl = backbone, emcl

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self, data: TaskData, device: torch.device, eval_cfg: dict, num_workers: int) -> EvalResult:
        raise NotImplementedError

    def save_assets(self, folder: Path) -> None:
        """Files a checkpoint needs besides the weights (a tokenizer, an answer vocabulary); none by default."""

    def serving(self, head: str) -> Task:
        """The module that serves ``head``: this task, or one of the heads of ``task=multi``."""
        if head != self.name and head not in self.serves:
            raise ConfigError(f"this model was trained for task={self.name}, which has no {head} head")
        return self


class Captioner(Protocol):
    """A head that writes captions (``multitask.load(...).caption``)."""

    def caption_frames(self, frames: torch.Tensor, mask: torch.Tensor, block_size: int,
                       batch_size: int) -> list[str]: ...


class Answerer(Protocol):
    """A head that answers questions (``multitask.load(...).answer``)."""

    answers: list[str]

    def pool_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...

    def encode_questions(self, questions: list[str]) -> torch.Tensor: ...

    def logits(self, video: torch.Tensor, question: torch.Tensor, block_size: int) -> torch.Tensor: ...


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    """Decorator: ``@register_task("retrieval") def build(cfg, data, assets, shared) -> Task``."""
    def add(builder: TaskBuilder) -> TaskBuilder:
        TASKS[name] = builder
        return builder
    return add


def load_heads() -> None:
    for package in HEAD_PACKAGES:
        importlib.import_module(package)


def build_shared(cfg: dict) -> Shared:
    """The backbone and EMCL bridge the ``model`` and ``data`` config groups describe."""
    backbone = build_backbone(cfg["model"], cfg["data"], cfg["trainer"]["contrastive_chunks"])
    return backbone, build_emcl(cfg["model"]["emcl"])


def build_task(cfg: dict, data: TaskData | None = None, assets: Path | None = None,
               shared: Shared | None = None) -> Task:
    """The task ``task.name`` names. ``assets``: a checkpoint folder whose files (tokenizer, answer vocabulary)
    must be reused, or None to derive them from ``data``; ``shared``: the parts ``task=multi`` shares."""
    load_heads()
    name = cfg["task"]["name"]
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](cfg, data, assets, shared if shared is not None else build_shared(cfg))
