"""The run's entry: ``run(cfg)`` (what train.py calls) resolves the config, prepares the data, builds the
task through the registry the heads fill, then trains (``multitask.training``) or evaluates a checkpoint.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from omegaconf import DictConfig, OmegaConf

from multitask import checkpoint as ckpt
from multitask.data.feature_cache import FeatureCache
from multitask.data.registry import build_data, build_multi_data, build_stream_data
from multitask.dist import die_with_launcher
from multitask.errors import ConfigError
from multitask.evaluation import evaluate
from multitask.files import run_lock
from multitask.init_from import init_weights
from multitask.runlog import environment, setup_logging, write_json
from multitask.task import Task, build_task
from multitask.tracking import accelerator_options
from multitask.training import resume_point, train
from multitask.types import TaskData

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def make_accelerator(trainer: dict, tracking: dict | None = None, heads_take_turns: bool = False) -> Accelerator:
    """CPU when no CUDA device exists, so ``accelerate launch --multi_gpu`` gives a gloo run.

    On the CPU each process gets its share of the cores (``accelerate launch`` otherwise pins
    OMP_NUM_THREADS to 1 and a single-process run uses one core). ``trainer.mixed_precision`` null
    leaves the choice to ``accelerate launch`` (its --mixed_precision flag or config file), else "no".
    ``tracking``: the experiment trackers' arguments (``multitask.tracking.accelerator_options``).
    ``heads_take_turns`` (task=multi): a step trains one head, so DDP must expect the others' parameters to
    get no gradient.
    """
    die_with_launcher()
    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision=trainer["mixed_precision"],
                              gradient_accumulation_steps=trainer["grad_accum"], dynamo_backend="no",
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=heads_take_turns)],
                              **(tracking or {}))
    if cpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    if accelerator.is_main_process:
        warn_inert_settings(accelerator)
    return accelerator


def warn_inert_settings(accelerator: Accelerator) -> None:
    """Say what the launcher asked for that does not happen: a dynamo backend (``trainer.compile`` compiles
    instead, in place, so checkpoint keys never gain ``_orig_mod.``), and fp16 on the CPU (Accelerate then
    runs float32: no autocast, no loss scaling)."""
    if os.environ.get("ACCELERATE_DYNAMO_BACKEND", "no").lower() != "no":
        logger.warning("accelerate launch's dynamo backend is not used (it would compile the whole task and "
                       "change its checkpoint keys); set trainer.compile=true to compile the backbone's blocks")
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        logger.warning("mixed precision fp16 does nothing on the CPU: Accelerate runs float32 there (bf16 works)")


def run(cfg: DictConfig) -> dict:
    """Entry point: resolve the config, then train (and evaluate) or evaluate a checkpoint."""
    conf = OmegaConf.to_container(cfg, resolve=True)
    tracking = accelerator_options(conf["trainer"]["log_with"], conf["output_dir"])  # a missing tracker stops here
    accelerator = make_accelerator(conf["trainer"], tracking, heads_take_turns="heads" in conf["task"])
    setup_logging(accelerator.is_main_process)
    out = Path(conf["output_dir"])
    if not accelerator.is_main_process:
        return _run(cfg, conf, accelerator, out)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        return _run(cfg, conf, accelerator, out)


def _run(cfg: DictConfig, conf: dict, accelerator: Accelerator, out: Path) -> dict:
    if accelerator.is_main_process:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        write_json(out / "environment.json", environment(accelerator.num_processes, str(accelerator.device),
                                                         accelerator.mixed_precision))
    set_seed(conf["seed"])
    with accelerator.main_process_first():
        data = prepare_data(conf, show_progress=accelerator.is_main_process)
    _record_skipped(data, out, accelerator)
    if conf["eval_only"]:
        return evaluate_checkpoint(conf, data, accelerator)
    resume = resume_point(conf)
    init = Path(conf["model"]["init_from"]).expanduser() if conf["model"]["init_from"] and not resume else None
    start = resume.path if resume else init
    if start is not None:  # the checkpoint holds the weights: never look for CLIP weights, take its activation
        conf["model"]["pretrained"] = None
        if conf["model"]["quick_gelu"] is None:
            conf["model"]["quick_gelu"] = ckpt.checkpoint_config(start)["model"]["quick_gelu"]
    task = build_task(conf, data, assets=start)  # its tokenizer / answers, so its heads fit
    if init is not None:
        init_weights(task, init)
    conf["model"]["quick_gelu"] = task.backbone.quick_gelu  # as resolved from the weights: checkpoints rebuild it
    check_feature_cache(conf, task)
    if accelerator.is_main_process:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(conf)))
        task.save_assets(out)
    return train(conf, task, data, accelerator, resume)


QUOTED_KEYS = ("data.shards",)  # brace patterns, which Hydra's override grammar would read as dictionaries


def quote_overrides(overrides: list[str]) -> list[str]:
    """The overrides with the values of ``QUOTED_KEYS`` quoted for Hydra when given bare
    (``data.shards=/data/{00000..00099}.tar``, as video2dataset users write it). A key given several times, as
    the shell's own brace expansion of such an argument gives it, is one value joined with ``::``."""
    values: dict[str, list[str]] = {}  # key as first given -> its bare values
    quoted: list[str] = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key.lstrip("+~") not in QUOTED_KEYS or value[:1] in ("'", '"'):
            quoted.append(override)
            continue
        if key not in values:
            values[key] = []
            quoted.append(key)  # a placeholder, filled in below
        values[key].append(value)
    return [f"{item}={_quote('::'.join(values[item]))}" if item in values else item for item in quoted]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def compose_config(overrides: list[str]) -> dict:
    """The resolved config ``train.py`` would run with these command-line overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = quote_overrides(overrides)
    if GlobalHydra.instance().is_initialized():
        return OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)


def prepare_data(conf: dict, show_progress: bool) -> TaskData:
    task, data = conf["task"], conf["data"]
    if "heads" in task:  # a task of several heads (task=multi): each head's settings and annotations under its name
        heads = {head: task[head]["annotations"] for head in task["heads"]}
        if data["name"] == "shards":
            return build_stream_data(data, heads, task["mixing"])
        return build_multi_data(data, heads, task["mixing"], task["temperature"], show_progress)
    if data["name"] == "shards":
        return build_stream_data(data, {task["name"]: task["annotations"]})
    return build_data(task["annotations"], data, show_progress)


def check_feature_cache(conf: dict, task: Task) -> None:
    """Stored tower outputs need frozen towers, and the very weights they were made with."""
    root = conf["data"].get("feature_cache")  # data=shards has no caches
    if not root:
        return
    if not conf["model"]["freeze_backbone"]:
        raise ConfigError("data.feature_cache needs model.freeze_backbone=true: stored features cannot train the "
                          "towers")
    FeatureCache(root, conf["data"]["num_frames"], conf["data"]["image_size"]).check_model(task.backbone)


def _record_skipped(data: TaskData, out: Path, accelerator: Accelerator) -> None:
    if data.skipped and accelerator.is_main_process:
        write_json(out / "skipped_videos.json", {"count": len(data.skipped), "videos": data.skipped})


def evaluate_checkpoint(conf: dict, data: TaskData, accelerator: Accelerator) -> dict:
    """``eval_only=true checkpoint=DIR``: the task rebuilt from the checkpoint (its architecture; the inference
    options follow the command) and evaluated. A task=multi checkpoint serves each single-task evaluation."""
    if not conf["checkpoint"]:
        raise ConfigError("eval_only=true needs checkpoint=<checkpoint folder>")
    requested = conf["task"]
    restored = ckpt.restore(conf["checkpoint"], head=requested["name"], inference=ckpt.inference_options(requested))
    conf = {**conf, "model": restored.conf["model"]}
    check_feature_cache(conf, restored.task)
    restored.task.to(accelerator.device)
    return evaluate(conf, restored.task, data, accelerator)
