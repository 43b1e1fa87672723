"""task=multi: one backbone and one EMCL bridge shared by the retrieval, caption and QA heads.

Each global batch comes from one task's data (``MixedBatchSampler``) and trains that head plus the shared
parts, its loss scaled by ``task.weights[<task>]``. Evaluation runs every head with its own protocol;
metric names are prefixed (``retrieval/t2v/R@1``, ``caption/CIDEr``, ``qa/accuracy``). The state dict
keys of a head start with ``tasks.<task>.``, so a single-task evaluation can load its part.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from multitask.errors import ConfigError
from multitask.task import Shared, Task, build_task, register_task
from multitask.types import EvalResult, TaskData

HEADS = ("retrieval", "caption", "qa")


class MultiTask(Task):
    name = "multi"
    serves = HEADS

    def __init__(self, tasks: dict[str, Task], weights: dict[str, float]) -> None:
        first = next(iter(tasks.values()))
        super().__init__(first.backbone, first.emcl)  # shared by every head
        self.tasks = nn.ModuleDict(tasks)
        self.serves = tuple(tasks)  # the heads this model was built with (task.heads)
        self.weights = {name: float(weights[name]) for name in tasks}

    def serving(self, head: str) -> Task:
        if head == self.name:
            return self
        super().serving(head)  # raises for a head it does not have
        return self.tasks[head]

    def save_assets(self, folder: Path) -> None:
        for task in self.tasks.values():
            task.save_assets(folder)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        name = batch["task"][0]
        terms = self.tasks[name]({k: v for k, v in batch.items() if k != "task"})
        weight = self.weights[name]
        out = {f"{name}_{k}": weight * v for k, v in terms.items() if k.endswith("_loss")}
        return {"loss": weight * terms["loss"], **out}

    @torch.no_grad()
    def evaluate(self, data: TaskData, device: torch.device, eval_cfg: dict, num_workers: int) -> EvalResult:
        """Every head on its own data and protocol; metric names prefixed with the head's."""
        results = {name: self.tasks[name].evaluate(part, device, eval_cfg, num_workers)
                   for name, part in data.parts.items()}
        metrics = {f"{name}/{k}": v for name, r in results.items() for k, v in r.metrics.items()}
        predictions = [{"task": name, **record} for name, r in results.items() for record in r.predictions]
        similarity = results["retrieval"].similarity if "retrieval" in results else None
        skipped = {f"{name}/{video}": why for name, r in results.items() for video, why in r.skipped.items()}
        return EvalResult(metrics, sum(r.num_samples for r in results.values()), predictions, similarity, skipped)


@register_task("multi")
def build_multi(cfg: dict, data: TaskData | None, assets: Path | None, shared: Shared) -> MultiTask:
    """One backbone and one EMCL for the heads ``task.heads`` names; ``task.<head>`` holds each head's settings."""
    unknown = sorted(set(cfg["task"]["heads"]) - set(HEADS))
    if unknown or not cfg["task"]["heads"]:
        raise ConfigError(f"task.heads must name some of {', '.join(HEADS)}; got {cfg['task']['heads']}")
    heads = {name: build_task({**cfg, "task": cfg["task"][name]}, data.parts[name] if data else None, assets, shared)
             for name in cfg["task"]["heads"]}
    return MultiTask(heads, cfg["task"]["weights"])
