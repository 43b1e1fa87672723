"""Task registry: ``task.name`` -> a builder that maps config to a task module."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from multitask.backbone import build_backbone
from multitask.emcl import EMCL
from tasks.retrieval import RetrievalTask


def build_emcl(emcl_cfg: dict) -> EMCL | None:
    """EMCL from ``model.emcl``, or None when ``enabled`` is false (the paper's base model)."""
    if not emcl_cfg.get("enabled", True):
        return None
    return EMCL(**{k: v for k, v in emcl_cfg.items() if k != "enabled"})


def build_retrieval(cfg: dict) -> nn.Module:
    return RetrievalTask(build_backbone(cfg["model"], cfg["data"]), build_emcl(cfg["model"]["emcl"]))


TASKS: dict[str, Callable[[dict], nn.Module]] = {"retrieval": build_retrieval}


def build_task(cfg: dict) -> nn.Module:
    name = cfg["task"]["name"]
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](cfg)
