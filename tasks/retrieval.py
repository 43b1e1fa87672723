"""Text-video retrieval: symmetric InfoNCE on EMCL-reconstructed features (paper Eq. 10)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from multitask.backbone import VideoTextBackbone, masked_mean, text_conditioned_pool
from multitask.types import TaskData
from multitask.dist import all_gather_with_grad, gather_cat
from multitask.emcl import EMCL
from multitask.evaluation import encode_texts, encode_videos
from multitask.metrics import (attribute_probes, dual_softmax, inverted_softmax, multi_caption_metrics,
                               retrieval_metrics)
from multitask.types import EvalResult, Similarity


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of a (B, B) logit matrix whose diagonal holds the pairs."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class RetrievalHead(nn.Module):
    """Scores texts against videos through the EMCL bridge: the similarity both training and
    evaluation use. ``pooling='mean'`` runs EMCL on [videos; texts]; ``'text_conditioned'``
    (the reference network) on the A*B text-conditioned video rows plus the A text rows.

    ``reference_compat`` repeats the public code's arithmetic where ours deliberately differs:
    text-conditioned frame weights that are not renormalised over the real frames (EMCL-Net), and
    frames L2-normalised before mean pooling (CLIP4Clip's meanP / seqTransf)."""

    def __init__(self, emcl: EMCL | None, pooling: str = "mean", pool_temperature: float = 3.0,
                 reference_compat: bool = False) -> None:
        super().__init__()
        self.emcl, self.pooling, self.pool_temperature = emcl, pooling, pool_temperature
        self.reference_compat = reference_compat

    def mean_pool(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames: (B, T, D), mask: (B, T) -> (B, D)."""
        return masked_mean(F.normalize(frames, dim=-1) if self.reference_compat else frames, mask)

    def _bridge(self, video: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video: (V, D), text: (A, D) -> both reconstructed and L2-normalised."""
        if self.emcl is not None:
            out = self.emcl(torch.cat([video, text]))  # (V + A, D)
            video, text = out[: video.shape[0]], out[video.shape[0]:]
        return F.normalize(video, dim=-1), F.normalize(text, dim=-1)

    def forward(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """text: (A, D), frames: (B, T, D), mask: (B, T) -> cosine similarity (A, B), in float32 even under
        mixed-precision autocast (bf16 similarities would blur the ranking the contrastive loss sharpens)."""
        with torch.autocast(device_type=text.device.type, enabled=False):
            return self._similarity(text.float(), frames.float(), mask)

    def _similarity(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            video, text = self._bridge(self.mean_pool(frames, mask), text)
            return text @ video.t()
        a, b = text.shape[0], frames.shape[0]
        pooled = text_conditioned_pool(text, frames, mask, self.pool_temperature,
                                       renormalise=not self.reference_compat)  # (A, B, D)
        video, text = self._bridge(pooled.reshape(a * b, -1), text)
        return torch.einsum("ad,abd->ab", text, video.view(a, b, -1))


class RetrievalTask(nn.Module):
    """Contrastive retrieval on the shared backbone; features are gathered across processes
    with gradient before EMCL and the loss, so the loss is a function of the global batch."""

    name = "retrieval"
    heads = ("retrieval",)  # what multitask.load users may ask of it

    def __init__(self, backbone: VideoTextBackbone, emcl: EMCL | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = RetrievalHead(emcl, pooling=backbone.pooling, reference_compat=backbone.reference_compat)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        device = batch["video"].device
        text = self.backbone.encode_text(self.backbone.tokenize(batch["text"]).to(device))  # (b, D)
        frames = self.backbone.encode_frames(batch["video"], batch["video_mask"])  # (b, T, D)
        text, frames = all_gather_with_grad(text.float()), all_gather_with_grad(frames.float())
        mask = gather_cat(batch["video_mask"])  # (B, T)
        sim = self.head(text, frames, mask)  # (B, B)
        contrastive = info_nce(self.backbone.logit_scale() * sim)
        return {"loss": contrastive, "contrastive_loss": contrastive}

    def save_assets(self, folder: Path) -> None:
        """Retrieval has no files beyond the model state."""

    @torch.no_grad()
    def evaluate(self, data: TaskData, device: torch.device, eval_cfg: dict, num_workers: int = 0) -> EvalResult:
        """Encode every test video and caption once, score them blockwise through the bridge, rank."""
        batch_size = eval_cfg["batch_size"]
        frames, mask = encode_videos(self.backbone, data.test, device, batch_size, num_workers)  # (V, T, D), (V, T)
        texts, counts = data.test.captions()
        text = encode_texts(self.backbone, texts, device, batch_size)  # (Q, D)
        sim = blockwise_similarity(self.head, text, frames, mask, eval_cfg["block_size"]).cpu()  # (Q, V)
        dsl = dsl_temperature(eval_cfg, float(self.backbone.logit_scale()))
        metrics = retrieval_report(sim, counts, eval_cfg.get("inverted_softmax", False), data.attributes, dsl)
        video_ids = data.test.video_ids()
        text_ids = [f"{v}#{k}" for v, n in zip(video_ids, counts) for k in range(n)]
        return EvalResult(metrics, len(texts), similarity=Similarity(sim, text_ids, video_ids))


def dsl_temperature(eval_cfg: dict, logit_scale: float) -> float | None:
    """``eval.dsl_temperature``, or 1 / the model's logit scale (its training temperature) when null;
    None when ``eval.dual_softmax`` is off."""
    if not eval_cfg.get("dual_softmax", False):
        return None
    return eval_cfg.get("dsl_temperature") or 1.0 / logit_scale


def blockwise_similarity(head: RetrievalHead, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                         block_size: int) -> torch.Tensor:
    """(Q, V) similarity with EMCL run on each (text block, video block), as during training."""
    if head.pooling == "mean":
        return _batched_blocks(head, text.float(), head.mean_pool(frames.float(), mask), block_size)
    rows = []
    for i in range(0, text.shape[0], block_size):
        rows.append(torch.cat([head(text[i: i + block_size], frames[j: j + block_size], mask[j: j + block_size])
                               for j in range(0, frames.shape[0], block_size)], dim=1))
    return torch.cat(rows)


def _batched_blocks(head: RetrievalHead, text: torch.Tensor, video: torch.Tensor, block_size: int,
                    budget: int = 2**25) -> torch.Tensor:
    """Mean pooling: every (text block, video block) pair's [videos; texts] through EMCL in batched calls of
    equally shaped pairs (at most ``budget`` values each), instead of one small call per pair, whose cost
    is mostly per-operation overhead. text: (Q, D), video: (V, D) pooled -> (Q, V)."""
    sim = text.new_empty(text.shape[0], video.shape[0])
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(0, text.shape[0], block_size):
        for j in range(0, video.shape[0], block_size):
            shape = (min(block_size, text.shape[0] - i), min(block_size, video.shape[0] - j))
            groups.setdefault(shape, []).append((i, j))
    for (a, b), starts in groups.items():
        per_call = max(1, budget // ((a + b) * text.shape[1]))
        for k in range(0, len(starts), per_call):
            chunk = starts[k: k + per_call]
            rows = torch.stack([torch.cat([video[j: j + b], text[i: i + a]]) for i, j in chunk])  # (G, b + a, D)
            if head.emcl is not None:
                rows = head.emcl.forward_sets(rows)
            rows = F.normalize(rows, dim=-1)
            block_sims = rows[:, b:] @ rows[:, :b].transpose(1, 2)  # (G, a, b)
            for (i, j), block in zip(chunk, block_sims):
                sim[i: i + a, j: j + b] = block
    return sim


def _directions(sim: torch.Tensor, counts: list[int]) -> dict[str, dict[str, float]]:
    if all(c == 1 for c in counts):
        return {"t2v": retrieval_metrics(sim), "v2t": retrieval_metrics(sim.t())}
    return multi_caption_metrics(sim, counts)


def _reweighted(sim: torch.Tensor, counts: list[int], prior, tag: str) -> dict[str, float]:
    """Metrics of a query-prior re-weighting (inverted softmax, DSL), under their own names: the prior runs
    over the queries of each direction (captions for t2v, videos for v2t)."""
    t2v = _directions(prior(sim), counts)["t2v"]
    v2t = _directions(prior(sim.t()).t(), counts)["v2t"]
    return {**{f"t2v_{tag}/{k}": v for k, v in t2v.items()}, **{f"v2t_{tag}/{k}": v for k, v in v2t.items()}}


def retrieval_report(sim: torch.Tensor, counts: list[int], use_inverted_softmax: bool = False,
                     attributes: list[dict] | None = None, dsl_temperature: float | None = None) -> dict[str, float]:
    """Flat metric dict: t2v/..., v2t/..., optionally t2v_is/..., v2t_is/... (inverted softmax),
    t2v_dsl/..., v2t_dsl/... (dual softmax at ``dsl_temperature``) and probe/...."""
    out = {f"{d}/{k}": v for d, m in _directions(sim, counts).items() for k, v in m.items()}
    if use_inverted_softmax:
        out.update(_reweighted(sim, counts, inverted_softmax, "is"))
    if dsl_temperature is not None:
        out.update(_reweighted(sim, counts, lambda s: dual_softmax(s, dsl_temperature), "dsl"))
    if attributes is not None and all(c == 1 for c in counts):
        out.update(attribute_probes(sim, attributes))
    return out
