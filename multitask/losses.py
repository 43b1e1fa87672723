"""Losses of the paired heads (captioning, QA): EMCL on gathered [video; text] pairs, and cross-entropies
normalised by the global count, so they do not depend on how the batch is split across processes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from multitask.dist import all_gather_with_grad, global_sum, local_offset, world_size
from multitask.emcl import EMCL
from multitask.similarity import info_nce


def paired_emcl(emcl: EMCL, video: torch.Tensor, text: torch.Tensor,
                scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EMCL on the gathered [videos; texts] (2B rows); video, text: this rank's (b, D) pairs.

    Returns this rank's reconstructed (b, D) videos and texts, and the InfoNCE of the global batch's
    reconstructed pairs at inverse temperature ``scale``.
    """
    b = video.shape[0]
    videos, texts = all_gather_with_grad(video), all_gather_with_grad(text)  # (B, D) each
    rec_video, rec_text = emcl.joint(videos.float(), texts.float())  # (B, D) each, float32 under autocast too
    with torch.autocast(device_type=rec_video.device.type, enabled=False):  # float32 similarities under mixed precision
        sim = F.normalize(rec_text.float(), dim=-1) @ F.normalize(rec_video.float(), dim=-1).t()  # (B, B)
    start = local_offset(b)
    return rec_video[start: start + b], rec_text[start: start + b], info_nce(scale * sim)


def global_mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                              label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy summed over this rank's counted targets, divided by the count over all ranks
    (times the number of processes, which DDP's gradient averaging divides out): every counted
    target of the global batch weighs the same however it is split. logits: (N, C), targets: (N,)."""
    total = F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, label_smoothing=label_smoothing,
                            reduction="sum")
    count = global_sum(float((targets != ignore_index).sum()))
    return total * world_size() / max(count, 1.0)
