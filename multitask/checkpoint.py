"""Checkpoint folders: atomic writes, the ``last`` link, retention, lookup for resume, and ``restore``."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import load_model, save_model
from torch import nn

from multitask.errors import DataError
from multitask.task import Task, build_task

logger = logging.getLogger(__name__)

META = "meta.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(DataError):
    """A checkpoint that does not exist, is incomplete, or belongs to another task."""


def staging_dir(ckpt_root: Path, step: int) -> Path:
    return ckpt_root / f"step_{step}.tmp"


def finalize(ckpt_root: Path, step: int, meta: dict, keep: int | None) -> Path:
    """Write meta.json last, rename the staging folder into place, repoint ``last``, prune old ones.

    A crash at any point leaves either the previous complete checkpoint or a ``.tmp`` folder that
    lookup ignores, never a checkpoint that ``resume=auto`` would pick and fail on.
    """
    tmp, final = staging_dir(ckpt_root, step), ckpt_root / f"step_{step}"
    (tmp / META).write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    link_tmp = ckpt_root / "last.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, ckpt_root / "last")
    _prune(ckpt_root, keep)
    return final


def complete_steps(ckpt_root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    found = []
    for child in ckpt_root.iterdir() if ckpt_root.is_dir() else []:
        match = _STEP_DIR.match(child.name)
        if match and (child / META).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _prune(ckpt_root: Path, keep: int | None) -> None:
    if not keep:
        return
    for _, folder in complete_steps(ckpt_root)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def latest(ckpt_root: Path) -> Path | None:
    steps = complete_steps(ckpt_root)
    return steps[-1][1] if steps else None


def read_meta(path: str | Path, task: str | None) -> dict:
    """Validate a checkpoint folder (for ``task``, unless None) and return its metadata."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} does not exist")
    if not (folder / META).is_file():
        raise CheckpointError(f"checkpoint {folder} is incomplete (no {META}); was it written by this framework?")
    meta = json.loads((folder / META).read_text())
    if task is not None and meta.get("task") != task:
        raise CheckpointError(f"checkpoint {folder} belongs to task {meta.get('task')!r}, not {task!r}")
    return meta


INFERENCE_OPTIONS = ("num_beams",)  # task keys an evaluation may change; the others shape the saved weights


def checkpoint_config(folder: Path) -> dict:
    """The resolved config a checkpoint was saved with, ``model.pretrained`` cleared (the checkpoint holds
    every weight: never look for CLIP weights)."""
    if not (folder / "config.yaml").is_file():
        raise CheckpointError(f"{folder} is not a checkpoint folder with a config.yaml "
                              "(expected e.g. outputs/<task>/default/checkpoints/last)")
    conf = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True)
    conf["model"]["pretrained"] = None
    return conf


def inference_options(task_conf: dict) -> dict:
    """The ``INFERENCE_OPTIONS`` a task config sets (for task=multi, in its heads' parts)."""
    found = {k: v for part in task_conf.values() if isinstance(part, dict) for k, v in inference_options(part).items()}
    return {**found, **{k: task_conf[k] for k in INFERENCE_OPTIONS if k in task_conf}}


def _with_inference_options(task_conf: dict, options: dict) -> dict:
    """``task_conf`` (or, for task=multi, each head's part) with the inference options it has replaced."""
    out = {k: options.get(k, v) if k in INFERENCE_OPTIONS else v for k, v in task_conf.items()}
    return {k: _with_inference_options(v, options) if isinstance(v, dict) and "name" in v else v
            for k, v in out.items()}


def load_weights(task: nn.Module, folder: Path) -> None:
    """A checkpoint folder's model.safetensors into ``task``, with the mismatch named when it does not fit."""
    try:
        load_model(task, str(folder / "model.safetensors"))  # restores weights tied on save (the decoder's)
    except RuntimeError as err:
        raise CheckpointError(f"{folder} does not fit the model this config builds (model.* and task.* must "
                              f"match the checkpoint's config.yaml): {str(err)[:600]}") from err


def write_weights_only(task: Task, conf: dict, out: Path, origin: dict) -> Path:
    """A weights-only checkpoint folder: ``model.safetensors`` (no optimizer state), the task's files (tokenizer,
    answer vocabulary), ``config.yaml`` and ``meta.json`` (``weights_only``, step 0: ``resume`` starts a new run
    from it), plus ``origin`` in the metadata. What ``restore`` and ``load_resume`` read."""
    out.mkdir(parents=True, exist_ok=True)
    save_model(task, str(out / "model.safetensors"))
    task.save_assets(out)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(conf)))
    meta = {"task": conf["task"]["name"], "step": 0, "epoch": 0, "batch_in_epoch": 0, "weights_only": True, **origin}
    (out / META).write_text(json.dumps(meta, indent=2))
    return out


@dataclass
class Restored:
    task: Task  # the module that serves the head asked for (the whole task when none was)
    conf: dict  # the checkpoint's config, overrides applied
    meta: dict


def restore(folder: str | Path, head: str | None = None, model_overrides: dict | None = None,
            inference: dict | None = None) -> Restored:
    """Rebuild a checkpoint's task from its config.yaml, files and weights (EMCL mean included).

    ``head`` picks what one head needs (a head of a task=multi checkpoint, with the shared backbone and
    EMCL); ``model_overrides`` replace ``model.*`` keys that do not shape the weights (``reference_compat``);
    ``inference`` replaces the ``INFERENCE_OPTIONS`` (``num_beams``).
    """
    folder = Path(folder).expanduser()
    meta = read_meta(folder, None)
    conf = checkpoint_config(folder)
    conf["model"].update(model_overrides or {})
    conf["task"] = _with_inference_options(conf["task"], inference or {})
    task = build_task(conf, None, assets=folder)
    load_weights(task, folder)
    try:
        served = task.serving(head) if head else task
    except ValueError as err:
        raise CheckpointError(f"checkpoint {folder}: {err}") from err
    return Restored(served, conf, meta)
