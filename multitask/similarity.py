"""Text-video similarity through the EMCL bridge: what retrieval trains on, evaluates with, and searches by.

``pooling='mean'`` runs EMCL on [videos; texts]; ``'text_conditioned'`` (the reference network) on the
A*B text-conditioned video rows plus the A text rows. ``reference_compat`` repeats the public code's
arithmetic where ours deliberately differs: text-conditioned frame weights not renormalised over the
real frames (EMCL-Net), and frames L2-normalised before mean pooling (CLIP4Clip's meanP / seqTransf).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from multitask.backbone import masked_mean, text_conditioned_pool
from multitask.emcl import EMCL

POOL_TEMPERATURE = 3.0  # the reference's temperature of text-conditioned frame weights
EMCL_BUDGET = 2**25  # values per batched EMCL call over evaluation blocks


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of a (B, B) logit matrix whose diagonal holds the pairs."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class VideoTextScorer:
    """Cosine similarity of EMCL-reconstructed, L2-normalised features. Not a module: its only state is
    the EMCL bridge, which the task that builds it owns (and trains, saves, moves)."""

    def __init__(self, emcl: EMCL | None, pooling: str, reference_compat: bool) -> None:
        self.emcl, self.pooling, self.reference_compat = emcl, pooling, reference_compat

    def mean_pool(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames: (B, T, D), mask: (B, T) -> (B, D)."""
        return masked_mean(F.normalize(frames, dim=-1) if self.reference_compat else frames, mask)

    def _bridge(self, video: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video: (V, D), text: (A, D) -> both reconstructed and L2-normalised."""
        if self.emcl is not None:
            video, text = self.emcl.joint(video, text)
        return F.normalize(video, dim=-1), F.normalize(text, dim=-1)

    def __call__(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """text: (A, D), frames: (B, T, D), mask: (B, T) -> cosine similarity (A, B), in float32 even under
        mixed-precision autocast (bf16 similarities would blur the ranking the contrastive loss sharpens)."""
        with torch.autocast(device_type=text.device.type, enabled=False):
            return self._similarity(text.float(), frames.float(), mask)

    def _similarity(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            video, text = self._bridge(self.mean_pool(frames, mask), text)
            return text @ video.t()
        a, b = text.shape[0], frames.shape[0]
        pooled = text_conditioned_pool(text, frames, mask, POOL_TEMPERATURE,
                                       renormalise=not self.reference_compat)  # (A, B, D)
        video, text = self._bridge(pooled.reshape(a * b, -1), text)
        return torch.einsum("ad,abd->ab", text, video.view(a, b, -1))

    def blockwise(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                  block_size: int) -> torch.Tensor:
        """(Q, V) similarity with EMCL run on each (text block, video block), as during training."""
        if self.pooling == "mean":
            return self._batched_blocks(text.float(), self.mean_pool(frames.float(), mask), block_size)
        rows = []
        for i in range(0, text.shape[0], block_size):
            rows.append(torch.cat([self(text[i: i + block_size], frames[j: j + block_size], mask[j: j + block_size])
                                   for j in range(0, frames.shape[0], block_size)], dim=1))
        return torch.cat(rows)

    def _batched_blocks(self, text: torch.Tensor, video: torch.Tensor, block_size: int) -> torch.Tensor:
        """Mean pooling: every (text block, video block) pair's [videos; texts] through EMCL in batched calls
        of equally shaped pairs (at most ``EMCL_BUDGET`` values each), instead of one small call per pair,
        whose cost is mostly per-operation overhead. text: (Q, D), video: (V, D) pooled -> (Q, V)."""
        sim = text.new_empty(text.shape[0], video.shape[0])
        for (a, b), starts in _block_groups(text.shape[0], video.shape[0], block_size).items():
            per_call = max(1, EMCL_BUDGET // ((a + b) * text.shape[1]))
            for k in range(0, len(starts), per_call):
                chunk = starts[k: k + per_call]
                rows = torch.stack([torch.cat([video[j: j + b], text[i: i + a]]) for i, j in chunk])  # (G, b + a, D)
                if self.emcl is not None:
                    rows = self.emcl.forward_sets(rows)
                rows = F.normalize(rows, dim=-1)
                block_sims = rows[:, b:] @ rows[:, :b].transpose(1, 2)  # (G, a, b)
                for (i, j), block in zip(chunk, block_sims):
                    sim[i: i + a, j: j + b] = block
        return sim


def _block_groups(num_texts: int, num_videos: int, block_size: int) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """(text block rows, video block rows) -> the (text start, video start) of every block of that shape."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(0, num_texts, block_size):
        for j in range(0, num_videos, block_size):
            shape = (min(block_size, num_texts - i), min(block_size, num_videos - j))
            groups.setdefault(shape, []).append((i, j))
    return groups
