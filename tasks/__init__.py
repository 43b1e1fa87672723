"""Task registry: ``task.name`` -> a builder that maps config (and the prepared data) to a task module.

Builders take ``assets``: a checkpoint folder whose task files (the caption tokenizer, the answer
vocabulary) must be reused, or None to derive them from the training data.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from multitask.backbone import build_backbone
from multitask.caption_tokenizer import FILE_NAME, CaptionTokenizer, train_tokenizer
from multitask.data.registry import TaskData
from multitask.dist import broadcast_object, rank
from multitask.emcl import EMCL
from tasks.caption import CaptionDecoder, CaptionTask
from tasks.qa import ANSWERS_FILE, AnswerClassifier, QATask, answer_vocabulary, load_answers
from tasks.retrieval import RetrievalTask


def build_emcl(emcl_cfg: dict) -> EMCL | None:
    """EMCL from ``model.emcl``, or None when ``enabled`` is false (the paper's base model)."""
    if not emcl_cfg.get("enabled", True):
        return None
    return EMCL(**{k: v for k, v in emcl_cfg.items() if k != "enabled"})


def build_retrieval(cfg: dict, data: TaskData | None = None, assets: Path | None = None) -> nn.Module:
    return RetrievalTask(build_backbone(cfg["model"], cfg["data"]), build_emcl(cfg["model"]["emcl"]))


def caption_tokenizer(task_cfg: dict, data: TaskData | None, assets: Path | None) -> CaptionTokenizer:
    """From the checkpoint, else ``task.tokenizer``, else trained on the training captions on rank 0."""
    if assets is not None and (Path(assets) / FILE_NAME).is_file():
        return CaptionTokenizer.load(Path(assets) / FILE_NAME)
    if task_cfg.get("tokenizer"):
        return CaptionTokenizer.load(task_cfg["tokenizer"])
    if data is None:
        raise ValueError("task=caption needs a tokenizer: a checkpoint holding one, task.tokenizer, or training data")
    proto = train_tokenizer(data.train.captions()[0], task_cfg["vocab_size"]) if rank() == 0 else None
    return CaptionTokenizer(broadcast_object(proto))


def build_caption(cfg: dict, data: TaskData | None = None, assets: Path | None = None) -> nn.Module:
    task = cfg["task"]
    tokenizer = caption_tokenizer(task, data, assets)
    backbone = build_backbone(cfg["model"], cfg["data"])
    decoder = CaptionDecoder(tokenizer.vocab_size, backbone.embed_dim, max_length=task["max_length"], **task["decoder"])
    return CaptionTask(backbone, build_emcl(cfg["model"]["emcl"]), tokenizer, decoder,
                       emcl_loss_weight=task["emcl_loss_weight"], label_smoothing=task["label_smoothing"],
                       num_beams=task["num_beams"], max_length=task["max_length"])


def qa_answers(task_cfg: dict, data: TaskData | None, assets: Path | None) -> list[str]:
    """From the checkpoint, else the ``task.num_answers`` most frequent training answers."""
    if assets is not None and (Path(assets) / ANSWERS_FILE).is_file():
        return load_answers(Path(assets) / ANSWERS_FILE)
    if data is None:
        raise ValueError("task=qa needs an answer vocabulary: a checkpoint holding one, or training data")
    return answer_vocabulary(list(data.train.rows["answer"]), task_cfg["num_answers"])


def build_qa(cfg: dict, data: TaskData | None = None, assets: Path | None = None) -> nn.Module:
    task = cfg["task"]
    answers = qa_answers(task, data, assets)
    backbone = build_backbone(cfg["model"], cfg["data"])
    classifier = AnswerClassifier(backbone.embed_dim, len(answers), **task["classifier"])
    return QATask(backbone, build_emcl(cfg["model"]["emcl"]), answers, classifier,
                  emcl_loss_weight=task["emcl_loss_weight"],
                  emcl_features_to_classifier=task["emcl_features_to_classifier"])


TASKS: dict[str, Callable[..., nn.Module]] = {"retrieval": build_retrieval, "caption": build_caption, "qa": build_qa}


def build_task(cfg: dict, data: TaskData | None = None, assets: Path | None = None) -> nn.Module:
    name = cfg["task"]["name"]
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](cfg, data, assets)
