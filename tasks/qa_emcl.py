"""The reference EMCL-QA network (``task.network=emcl_qa``), the one EMCL's public video-QA code trains.

Video: per-frame features from ``model.temporal=transformer_projected``, pooled by learned frame weights.
Question: every token's feature from the text tower, pooled by learned token weights. Both are projected,
concatenated (video first) and classified by a ReLU MLP; EMCL runs on the projected [videos; questions]
for an auxiliary InfoNCE only, so the answer logits never pass through it. ``model.reference_compat``
repeats the reference's pooling arithmetic: softmax over every position, padding included, then masked
without renormalising; the default renormalises over the real frames and tokens.
"""
from __future__ import annotations

import torch
from torch import nn

from multitask.backbone import VideoTextBackbone, text_token_mask
from multitask.emcl import EMCL
from multitask.losses import global_mean_cross_entropy, paired_emcl
from multitask.task import Shared
from tasks.qa import QA_NETWORKS, UNKNOWN, QATask


class WeightedPool(nn.Module):
    """A learned weight per position (Linear-ReLU-Linear -> softmax over the positions), weighted sum."""

    def __init__(self, dim: int, renormalise: bool) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        self.renormalise = renormalise

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), mask: (B, L) of 0/1 -> (B, D)."""
        logits = self.score(x).squeeze(-1)  # (B, L)
        keep = mask.to(logits.dtype)
        if self.renormalise:
            weights = logits.masked_fill(keep == 0, float("-inf")).softmax(dim=-1)
        else:  # the reference: padding takes its share of the softmax, which is then dropped
            weights = logits.softmax(dim=-1) * keep
        return torch.einsum("bl,bld->bd", weights, x)


class ProjectedAnswerClassifier(nn.Module):
    """Project video and question (reference: 4x the text width each), concatenate, dropout, ReLU MLP."""

    def __init__(self, embed_dim: int, num_answers: int, proj_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.video, self.question = nn.Linear(embed_dim, proj_dim), nn.Linear(embed_dim, proj_dim)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * proj_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_answers))

    def project(self, video: torch.Tensor, question: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) each -> (B, proj_dim) each."""
        return self.video(video), self.question(question)

    def classify(self, video: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """Projected (B, proj_dim) each -> answer logits (B, num_answers)."""
        return self.mlp(self.dropout(torch.cat([video, question], dim=-1)))

    def forward(self, video: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        return self.classify(*self.project(video, question))


class EMCLQATask(QATask):
    """QA with the reference network; evaluation, answers and checkpoints as for the default network."""

    def __init__(self, backbone: VideoTextBackbone, emcl: EMCL | None, answers: list[str],
                 classifier: ProjectedAnswerClassifier, emcl_loss_weight: float) -> None:
        super().__init__(backbone, emcl, answers, classifier, emcl_loss_weight, emcl_features_to_classifier=False)
        renormalise = not backbone.reference_compat
        self.video_pool = WeightedPool(backbone.embed_dim, renormalise)
        self.question_pool = WeightedPool(backbone.embed_dim, renormalise)

    def pool_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.video_pool(frames, mask)

    def encode_questions(self, questions: list[str]) -> torch.Tensor:
        tokens = self.backbone.tokenize(questions).to(self.backbone.device)  # (B, L)
        return self.question_pool(self.backbone.encode_text_tokens(tokens).float(), text_token_mask(tokens))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        mask = batch["video_mask"]
        video = self.pool_video(self.backbone.encode_frames(batch["video"], mask).float(), mask)  # (b, D)
        video, question = self.classifier.project(video, self.encode_questions(batch["question"]))  # (b, P) each
        terms: dict[str, torch.Tensor] = {}
        if self.emcl is not None:
            terms["contrastive_loss"] = self.emcl_loss_weight * paired_emcl(self.emcl, video, question,
                                                                            self.backbone.logit_scale())[2]
        logits = self.classifier.classify(video, question)  # (b, A)
        terms["answer_loss"] = global_mean_cross_entropy(logits, self.targets(batch["answer"], video.device), UNKNOWN)
        return {"loss": sum(terms.values()), **terms}


def build_emcl_qa(task_cfg: dict, answers: list[str], shared: Shared) -> EMCLQATask:
    backbone, emcl = shared
    classifier = ProjectedAnswerClassifier(backbone.embed_dim, len(answers), **task_cfg["classifier"])
    return EMCLQATask(backbone, emcl, answers, classifier, emcl_loss_weight=task_cfg["emcl_loss_weight"])


QA_NETWORKS["emcl_qa"] = build_emcl_qa
