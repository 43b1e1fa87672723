"""Video question answering (MSRVTT-QA): classify over an answer vocabulary from the video and the
question (CLIP text tower), with EMCL on [video; question] (docs/architecture.md). ``task.network``
picks the network (``QA_NETWORKS``): ``default`` here, ``emcl_qa`` (the reference's) in qa_emcl.py."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from multitask.backbone import VideoTextBackbone, masked_mean
from multitask.emcl import EMCL
from multitask.encoding import encode_texts, encode_videos
from multitask.errors import ConfigError, MissingInputError
from multitask.losses import global_mean_cross_entropy, paired_emcl
from multitask.metrics import qa_metrics
from multitask.task import Shared, Task, register_task
from multitask.types import EvalResult, TaskData

ANSWERS_FILE = "answers.json"
UNKNOWN = -100  # target of a training answer outside the vocabulary: not counted in the loss


def answer_vocabulary(answers: list[str], size: int) -> list[str]:
    """The ``size`` most frequent answers, most frequent first (ties: first seen first)."""
    return [a for a, _ in Counter(answers).most_common(size)]


def save_answers(answers: list[str], folder: Path) -> None:
    (Path(folder) / ANSWERS_FILE).write_text(json.dumps(answers, indent=0))


def load_answers(path: Path) -> list[str]:
    if not Path(path).is_file():
        raise MissingInputError(f"answer vocabulary {path} does not exist")
    answers = json.loads(Path(path).read_text())
    if not isinstance(answers, list) or not answers:
        raise ConfigError(f"{path}: expected a non-empty JSON list of answers")
    return [str(a) for a in answers]


class AnswerClassifier(nn.Module):
    """Project video and question, concatenate, MLP over the answers (reference: 2048-d projections,
    an 8192-d hidden layer)."""

    def __init__(self, embed_dim: int, num_answers: int, proj_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.video, self.question = nn.Linear(embed_dim, proj_dim), nn.Linear(embed_dim, proj_dim)
        self.mlp = nn.Sequential(nn.Linear(2 * proj_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, num_answers))

    def forward(self, video: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """video, question: (B, D) -> answer logits (B, num_answers)."""
        return self.mlp(torch.cat([self.video(video), self.question(question)], dim=-1))


class QATask(Task):
    """Answer cross-entropy, plus (with EMCL) an InfoNCE between reconstructed video and question
    features weighted by ``emcl_loss_weight``; ``emcl_features_to_classifier`` also classifies from the
    reconstructed features (at evaluation EMCL then runs on fixed blocks of (video, question) pairs)."""

    name = "qa"
    serves = ("qa",)

    def __init__(self, backbone: VideoTextBackbone, emcl: EMCL | None, answers: list[str],
                 classifier: AnswerClassifier, emcl_loss_weight: float, emcl_features_to_classifier: bool) -> None:
        super().__init__(backbone, emcl)
        self.classifier = classifier
        self.answers, self.index = answers, {a: i for i, a in enumerate(answers)}
        self.emcl_loss_weight, self.emcl_features_to_classifier = emcl_loss_weight, emcl_features_to_classifier

    def save_assets(self, folder: Path) -> None:
        save_answers(self.answers, folder)

    def targets(self, answers: list[str], device: torch.device) -> torch.Tensor:
        return torch.tensor([self.index.get(a, UNKNOWN) for a in answers], device=device)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        device = batch["video"].device
        video = self.backbone.encode_video(batch["video"], batch["video_mask"]).float()  # (b, D)
        question = self.backbone.encode_strings(batch["question"]).float()  # (b, D)
        terms: dict[str, torch.Tensor] = {}
        if self.emcl is not None:
            rec_video, rec_question, contrastive = paired_emcl(self.emcl, video, question,
                                                               self.backbone.logit_scale())
            terms["contrastive_loss"] = self.emcl_loss_weight * contrastive
            if self.emcl_features_to_classifier:
                video, question = rec_video, rec_question
        logits = self.classifier(video, question)  # (b, A)
        terms["answer_loss"] = global_mean_cross_entropy(logits, self.targets(batch["answer"], device), UNKNOWN)
        return {"loss": sum(terms.values()), **terms}

    def pool_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-frame features (B, T, D) -> the classifier's video input (B, D)."""
        return masked_mean(frames, mask)

    def encode_questions(self, questions: list[str]) -> torch.Tensor:
        """Questions -> the classifier's question input (B, D)."""
        return self.backbone.encode_strings(questions).float()

    @torch.no_grad()
    def logits(self, video: torch.Tensor, question: torch.Tensor, block_size: int) -> torch.Tensor:
        """(Q, D) paired video and question features -> (Q, A), EMCL (if fed to the classifier) per block."""
        out = []
        for i in range(0, video.shape[0], block_size):
            v, q = video[i: i + block_size], question[i: i + block_size]
            if self.emcl is not None and self.emcl_features_to_classifier:
                v, q = self.emcl.joint(v, q)
            out.append(self.classifier(v, q))
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, data: TaskData, device: torch.device, eval_cfg: dict, num_workers: int) -> EvalResult:
        """Encode each test video once and every question, classify, score the top answers."""
        clips = data.test.videos()
        videos = encode_videos(self.backbone, clips, device, eval_cfg["batch_size"], num_workers)
        position = {v: i for i, v in enumerate(clips.video_ids())}
        rows = data.test.rows  # the questions about videos that loaded
        rows = rows.select([q for q, v in enumerate(rows["video_id"]) if position[v] not in videos.failed])
        video = self.pool_video(videos.frames, videos.mask)[[position[v] for v in rows["video_id"]]]  # (Q, D)
        question = encode_texts(self.backbone, list(rows["question"]), eval_cfg["batch_size"],
                                self.encode_questions)  # (Q, D)
        top = self.logits(video, question, eval_cfg["block_size"]).topk(min(5, len(self.answers)), dim=-1).indices
        ranked = [[self.answers[i] for i in row] for row in top.tolist()]
        truth, kinds = list(rows["answer"]), list(rows["category"])
        predictions = [{"question_id": q, "video_id": v, "question": text, "prediction": r[0], "answer": a,
                        "category": k} for q, v, text, r, a, k in
                       zip(rows["question_id"], rows["video_id"], rows["question"], ranked, truth, kinds)]
        skipped = {clips.video_ids()[i]: why for i, why in videos.failed.items()}
        return EvalResult(qa_metrics(ranked, truth, kinds), len(truth), predictions, skipped=skipped)


def qa_answers(task_cfg: dict, data: TaskData | None, assets: Path | None) -> list[str]:
    """From the checkpoint, else ``task.answers_file``, else the ``task.num_answers`` most frequent training
    answers."""
    if assets is not None and (Path(assets) / ANSWERS_FILE).is_file():
        return load_answers(Path(assets) / ANSWERS_FILE)
    if task_cfg["answers_file"]:
        return load_answers(Path(task_cfg["answers_file"]).expanduser())
    if data is None:
        raise ConfigError("task=qa needs an answer vocabulary: a checkpoint holding one, task.answers_file, or "
                          "training data")
    return answer_vocabulary(list(data.train.rows["answer"]), task_cfg["num_answers"])


def build_default(task_cfg: dict, answers: list[str], shared: Shared) -> QATask:
    backbone, emcl = shared
    classifier = AnswerClassifier(backbone.embed_dim, len(answers), **task_cfg["classifier"])
    return QATask(backbone, emcl, answers, classifier, emcl_loss_weight=task_cfg["emcl_loss_weight"],
                  emcl_features_to_classifier=task_cfg["emcl_features_to_classifier"])


QA_NETWORKS: dict[str, Callable[[dict, list[str], Shared], QATask]] = {"default": build_default}


@register_task("qa")
def build_qa(cfg: dict, data: TaskData | None, assets: Path | None, shared: Shared) -> QATask:
    task = cfg["task"]
    if task["network"] not in QA_NETWORKS:
        raise ConfigError(f"unknown task.network {task['network']!r}; known: {', '.join(QA_NETWORKS)}")
    return QA_NETWORKS[task["network"]](task, qa_answers(task, data, assets), shared)
