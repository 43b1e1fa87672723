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

from multitask.data.registry import TaskData


class MultiTask(nn.Module):
    name = "multi"
    heads = ("retrieval", "caption", "qa")

    def __init__(self, tasks: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.tasks = nn.ModuleDict(tasks)
        self.weights = {name: float(weights.get(name, 1.0)) for name in tasks}
        first = next(iter(tasks.values()))
        self.backbone = first.backbone  # shared by every head

    def part(self, name: str) -> nn.Module:
        return self.tasks[name]

    def save_assets(self, folder: Path) -> None:
        for task in self.tasks.values():
            task.save_assets(folder)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        name = batch["task"][0]
        terms = self.tasks[name]({k: v for k, v in batch.items() if k != "task"})
        weight = self.weights[name]
        out = {f"{name}_{k}": weight * v for k, v in terms.items() if k.endswith("_loss")}
        return {"loss": weight * terms["loss"], **out}

    def eval_size(self, data: TaskData) -> int:
        return sum(self.tasks[name].eval_size(part) for name, part in data.parts.items())

    @torch.no_grad()
    def evaluate(self, data: TaskData, device: torch.device, eval_cfg: dict, num_workers: int = 0,
                 predictions: list | None = None) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, part in data.parts.items():
            found: list = []
            scores = self.tasks[name].evaluate(part, device, eval_cfg, num_workers, found)
            metrics.update({f"{name}/{k}": v for k, v in scores.items()})
            if predictions is not None:
                predictions += [{"task": name, **record} for record in found]
        return metrics
