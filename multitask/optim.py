"""Optimizer with separate learning rates for CLIP and new modules; warmup then cosine."""
from __future__ import annotations

import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup


def param_groups(task: nn.Module, lr: float, lr_backbone: float, weight_decay: float) -> list[dict]:
    """CLIP weights at ``lr_backbone``, everything else at ``lr``; no decay on gains, biases, scales."""
    backbone_ids = {id(p) for p in task.backbone.backbone_parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in task.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "logit_scale" in name or "embedding" in name or name.endswith(".time")
        groups.setdefault((id(p) in backbone_ids, no_decay), []).append(p)
    return [{"params": ps, "lr": lr_backbone if is_backbone else lr, "weight_decay": 0.0 if no_decay else weight_decay}
            for (is_backbone, no_decay), ps in sorted(groups.items())]


def build_optimizer(task: nn.Module, lr: float, lr_backbone: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(task, lr, lr_backbone, weight_decay), betas=(0.9, 0.98), eps=1e-6)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    return get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
