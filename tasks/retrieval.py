"""Text-video retrieval: symmetric InfoNCE on EMCL-reconstructed features (the paper's Eq. 10)."""
from __future__ import annotations

from pathlib import Path

import torch

from multitask.backbone import VideoTextBackbone
from multitask.dist import all_gather_with_grad, gather_cat
from multitask.emcl import EMCL
from multitask.encoding import encode_texts, encode_videos
from multitask.metrics import dsl_temperature, retrieval_report
from multitask.similarity import VideoTextScorer, info_nce
from multitask.task import Shared, Task, register_task
from multitask.types import EvalResult, Similarity, TaskData


class RetrievalTask(Task):
    """Contrastive retrieval on the shared backbone; features are gathered across processes
    with gradient before EMCL and the loss, so the loss is a function of the global batch."""

    name = "retrieval"
    serves = ("retrieval",)

    def __init__(self, backbone: VideoTextBackbone, emcl: EMCL | None) -> None:
        super().__init__(backbone, emcl)
        self.scorer = VideoTextScorer(emcl, backbone.pooling, backbone.reference_compat)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        text = self.backbone.encode_strings(batch["text"])  # (b, D)
        frames = self.backbone.encode_frames(batch["video"], batch["video_mask"])  # (b, T, D)
        text, frames = all_gather_with_grad(text.float()), all_gather_with_grad(frames.float())
        mask = gather_cat(batch["video_mask"])  # (B, T)
        sim = self.scorer(text, frames, mask)  # (B, B)
        contrastive = info_nce(self.backbone.logit_scale() * sim)
        return {"loss": contrastive, "contrastive_loss": contrastive}

    @torch.no_grad()
    def evaluate(self, data: TaskData, device: torch.device, eval_cfg: dict, num_workers: int) -> EvalResult:
        """Encode every test video and caption once, score them blockwise through the bridge, rank."""
        batch_size = eval_cfg["batch_size"]
        videos = encode_videos(self.backbone, data.test, device, batch_size, num_workers)
        keep, ids = videos.kept(), data.test.video_ids()
        groups = [data.test.rows[i]["captions"] for i in keep]  # the captions of the videos that loaded
        texts, counts = [c for g in groups for c in g], [len(g) for g in groups]
        text = encode_texts(self.backbone, texts, batch_size)  # (Q, D)
        sim = self.scorer.blockwise(text, videos.frames[keep], videos.mask[keep], eval_cfg["block_size"]).cpu()
        dsl = dsl_temperature(eval_cfg, float(self.backbone.logit_scale()))
        attributes = [data.attributes[i] for i in keep] if data.attributes is not None else None
        metrics = retrieval_report(sim, counts, eval_cfg["inverted_softmax"], attributes, dsl)  # sim: (Q, V)
        video_ids = [ids[i] for i in keep]
        text_ids = [f"{v}#{k}" for v, n in zip(video_ids, counts) for k in range(n)]
        skipped = {ids[i]: why for i, why in videos.failed.items()}
        return EvalResult(metrics, len(texts), similarity=Similarity(sim, text_ids, video_ids), skipped=skipped)


@register_task("retrieval")
def build_retrieval(cfg: dict, data: TaskData | None, assets: Path | None, shared: Shared) -> RetrievalTask:
    return RetrievalTask(*shared)
