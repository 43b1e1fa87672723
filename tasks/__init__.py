"""Task registry: ``task.name`` -> a builder that maps config (and the prepared data) to a task module.

Builders take ``assets``: a checkpoint folder whose task files (the caption tokenizer, the answer
vocabulary) must be reused, or None to derive them from the training data.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import load_model
from torch import nn

from multitask.backbone import build_backbone
from multitask.caption_tokenizer import FILE_NAME, CaptionTokenizer, train_tokenizer
from multitask.checkpoint import CheckpointError, read_meta
from multitask.types import TaskData
from multitask.dist import broadcast_object, rank
from multitask.emcl import EMCL
from tasks.caption import CaptionDecoder, CaptionTask
from tasks.multi import MultiTask
from tasks.qa import ANSWERS_FILE, AnswerClassifier, QATask, answer_vocabulary, load_answers
from tasks.retrieval import RetrievalTask


def build_emcl(emcl_cfg: dict) -> EMCL | None:
    """EMCL from ``model.emcl``, or None when ``enabled`` is false (the paper's base model)."""
    if not emcl_cfg.get("enabled", True):
        return None
    return EMCL(**{k: v for k, v in emcl_cfg.items() if k != "enabled"})


def _shared(cfg: dict, shared: tuple | None) -> tuple:
    """(backbone, EMCL): the ones task=multi shares between its heads, or new ones."""
    if shared is not None:
        return shared
    chunks = cfg.get("trainer", {}).get("contrastive_chunks", 1)
    return build_backbone(cfg["model"], cfg["data"], chunks), build_emcl(cfg["model"]["emcl"])


def build_retrieval(cfg: dict, data: TaskData | None = None, assets: Path | None = None,
                    shared: tuple | None = None) -> nn.Module:
    return RetrievalTask(*_shared(cfg, shared))


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


def build_caption(cfg: dict, data: TaskData | None = None, assets: Path | None = None,
                  shared: tuple | None = None) -> nn.Module:
    task = cfg["task"]
    tokenizer = caption_tokenizer(task, data, assets)
    backbone, emcl = _shared(cfg, shared)
    decoder = CaptionDecoder(tokenizer.vocab_size, backbone.embed_dim, max_length=task["max_length"], **task["decoder"])
    return CaptionTask(backbone, emcl, tokenizer, decoder,
                       emcl_loss_weight=task["emcl_loss_weight"], label_smoothing=task["label_smoothing"],
                       num_beams=task["num_beams"], max_length=task["max_length"])


def qa_answers(task_cfg: dict, data: TaskData | None, assets: Path | None) -> list[str]:
    """From the checkpoint, else the ``task.num_answers`` most frequent training answers."""
    if assets is not None and (Path(assets) / ANSWERS_FILE).is_file():
        return load_answers(Path(assets) / ANSWERS_FILE)
    if data is None:
        raise ValueError("task=qa needs an answer vocabulary: a checkpoint holding one, or training data")
    return answer_vocabulary(list(data.train.rows["answer"]), task_cfg["num_answers"])


def build_qa(cfg: dict, data: TaskData | None = None, assets: Path | None = None,
             shared: tuple | None = None) -> nn.Module:
    task = cfg["task"]
    answers = qa_answers(task, data, assets)
    backbone, emcl = _shared(cfg, shared)
    classifier = AnswerClassifier(backbone.embed_dim, len(answers), **task["classifier"])
    return QATask(backbone, emcl, answers, classifier,
                  emcl_loss_weight=task["emcl_loss_weight"],
                  emcl_features_to_classifier=task["emcl_features_to_classifier"])


def build_multi(cfg: dict, data: TaskData | None = None, assets: Path | None = None) -> nn.Module:
    """One backbone and one EMCL for the three heads; ``task.<head>`` holds each head's settings."""
    shared = _shared(cfg, None)
    heads = {name: HEADS[name]({**cfg, "task": cfg["task"][name]}, data.parts[name] if data else None, assets, shared)
             for name in HEADS}
    return MultiTask(heads, cfg["task"]["weights"])


HEADS: dict[str, Callable[..., nn.Module]] = {"retrieval": build_retrieval, "caption": build_caption, "qa": build_qa}
TASKS: dict[str, Callable[..., nn.Module]] = {**HEADS, "multi": build_multi}


def build_task(cfg: dict, data: TaskData | None = None, assets: Path | None = None) -> nn.Module:
    name = cfg["task"]["name"]
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](cfg, data, assets)


def checkpoint_config(folder: Path) -> dict:
    """The resolved config a checkpoint was saved with, ``model.pretrained`` cleared (the checkpoint holds
    every weight: never look for CLIP weights)."""
    if not (folder / "config.yaml").is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder with a config.yaml "
                                "(expected e.g. outputs/<task>/default/checkpoints/last)")
    conf = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True)
    conf["model"]["pretrained"] = None
    return conf


INFERENCE_OPTIONS = ("num_beams",)  # task keys an evaluation may change; the others shape the saved weights


def with_checkpoint_architecture(conf: dict, folder: Path) -> dict:
    """``conf`` with the model and task settings the checkpoint was saved with."""
    saved = checkpoint_config(folder)
    return {**conf, "model": saved["model"], "task": saved["task"]}


def apply_inference_options(task: nn.Module, task_conf: dict) -> None:
    """Set the ``INFERENCE_OPTIONS`` that ``task_conf`` holds on a rebuilt task (or head)."""
    for key in INFERENCE_OPTIONS:
        if key in task_conf:
            setattr(task, key, task_conf[key])


def from_checkpoint(folder: Path, head: str | None = None, model_overrides: dict | None = None) -> tuple[nn.Module, dict]:
    """(the task rebuilt from a checkpoint's config.yaml, files and weights; that config).

    ``head`` picks one head of a task=multi checkpoint (shared backbone and EMCL included);
    ``model_overrides`` replace ``model.*`` keys that do not shape the weights (``reference_compat``).
    """
    folder = Path(folder).expanduser()
    conf = checkpoint_config(folder)
    conf["model"].update(model_overrides or {})
    read_meta(folder, conf["task"]["name"])
    task = build_task(conf, None, assets=folder)
    load_model(task, str(folder / "model.safetensors"))  # restores weights tied on save
    if head is None or head == conf["task"]["name"]:
        return task, conf
    if isinstance(task, MultiTask) and head in task.tasks:
        return task.tasks[head], conf
    raise CheckpointError(f"checkpoint {folder} belongs to task {conf['task']['name']!r}, which has no {head!r} head")
