"""Training and evaluation with Accelerate: plain functions, no Trainer class.

``run(cfg)`` is what train.py calls. A step is one optimizer update; ``trainer.batch_size`` is the
global batch of one forward pass, split across processes (``split_batches``), so every process
count sees the same global batches in the same order.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from multitask import checkpoint as ckpt
from multitask.data.feature_cache import FeatureCache
from multitask.data.registry import build_data, build_multi_data
from multitask.dist import assert_same_on_all_ranks
from multitask.emcl import EMCL
from multitask.metrics import format_table
from multitask.optim import build_optimizer, build_scheduler
from multitask.types import EvalResult, TaskData
from multitask.runlog import MetricsLog, environment, setup_logging, write_json, write_similarity
from tasks import (apply_inference_options, build_task, checkpoint_config, from_checkpoint,
                   with_checkpoint_architecture)

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class Loop:
    """Position of the training loop (what a checkpoint must restore besides accelerate state)."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def make_accelerator(trainer: dict) -> Accelerator:
    """CPU when no CUDA device exists, so ``accelerate launch --multi_gpu`` gives a gloo run.

    On the CPU each process gets its share of the cores (``accelerate launch`` otherwise pins
    OMP_NUM_THREADS to 1 and a single-process run uses one core). ``trainer.mixed_precision`` null
    leaves the choice to ``accelerate launch`` (its --mixed_precision flag or config file), else "no".
    """
    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision=trainer["mixed_precision"],
                              gradient_accumulation_steps=trainer["grad_accum"],
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    if cpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    return accelerator


def run(cfg: DictConfig) -> dict:
    """Entry point: resolve the config, then train (and evaluate) or evaluate a checkpoint."""
    conf = OmegaConf.to_container(cfg, resolve=True)
    accelerator = make_accelerator(conf["trainer"])
    setup_logging(accelerator.is_main_process)
    out = Path(conf["output_dir"])
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        write_json(out / "environment.json", environment(accelerator.num_processes, str(accelerator.device),
                                                         accelerator.mixed_precision))
    set_seed(conf["seed"])
    with accelerator.main_process_first():
        data = prepare_data(conf, show_progress=accelerator.is_main_process)
    _record_skipped(data, out, accelerator)
    if conf["eval_only"]:
        return evaluate_checkpoint(conf, data, accelerator)
    resume = resume_path(conf)
    if resume is not None:  # the checkpoint holds every weight: never look for CLIP weights, take its activation
        conf["model"]["pretrained"] = None
        if conf["model"].get("quick_gelu") is None:
            conf["model"]["quick_gelu"] = checkpoint_config(resume)["model"].get("quick_gelu")
    task = build_task(conf, data, assets=resume)
    conf["model"]["quick_gelu"] = task.backbone.quick_gelu  # as resolved from the weights: checkpoints rebuild it
    check_feature_cache(conf, task)
    if accelerator.is_main_process:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(conf)))
        task.save_assets(out)
    return train(conf, task, data, accelerator, resume)


def compose_config(overrides: list[str]) -> dict:
    """The resolved config ``train.py`` would run with these command-line overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)


def prepare_data(conf: dict, show_progress: bool) -> TaskData:
    task = conf["task"]
    if task["name"] == "multi":
        return build_multi_data(conf["data"], show_progress, task["mixing"], task["temperature"])
    return build_data(task["name"], conf["data"], show_progress)


def check_feature_cache(conf: dict, task: torch.nn.Module) -> None:
    """Stored tower outputs need frozen towers, and the very weights they were made with."""
    root = conf["data"].get("feature_cache")
    if not root:
        return
    if not conf["model"].get("freeze_backbone"):
        raise ValueError("data.feature_cache needs model.freeze_backbone=true: stored features cannot train the towers")
    FeatureCache(root, conf["data"]["num_frames"], conf["data"]["image_size"]).check_model(task.backbone)


def _record_skipped(data: TaskData, out: Path, accelerator: Accelerator) -> None:
    if data.skipped and accelerator.is_main_process:
        write_json(out / "skipped_videos.json", {"count": len(data.skipped), "videos": data.skipped})


def train_loader(data: TaskData, trainer: dict, seed: int, world: int) -> DataLoader:
    """Batches of ``trainer.batch_size`` (global); a training set smaller than that is one batch."""
    batch_size, n = trainer["batch_size"], len(data.train)
    if batch_size % world:
        raise ValueError(f"trainer.batch_size={batch_size} must be divisible by the {world} processes")
    if n < batch_size:
        batch_size = n - n % world
        if batch_size == 0:
            raise ValueError(f"{n} training samples cannot be split across {world} processes")
        logger.warning("only %d training samples, fewer than trainer.batch_size=%d: using batches of %d",
                       n, trainer["batch_size"], batch_size)
    # Its own generator: starting an epoch's iterator then draws (worker seeds) from it, not from the global RNG
    # that dropout uses, so a run resumed mid-epoch sees the same dropout masks as the uninterrupted run.
    return DataLoader(data.train, batch_sampler=data.train.batch_sampler(batch_size, seed),
                      num_workers=trainer["num_workers"], persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed))


def total_steps(trainer: dict, batches_per_epoch: int) -> int:
    per_epoch = batches_per_epoch // trainer["grad_accum"]
    if trainer.get("max_steps"):
        return int(trainer["max_steps"])
    return per_epoch * trainer["max_epochs"]


@dataclass
class Run:
    """Everything the training loop functions share."""
    conf: dict
    accelerator: Accelerator
    task: torch.nn.Module
    data: TaskData
    optimizer: torch.optim.Optimizer
    scheduler: object
    loader: DataLoader
    log: MetricsLog
    loop: Loop
    steps: int


def train(conf: dict, task: torch.nn.Module, data: TaskData, accelerator: Accelerator,
          resume: Path | None = None) -> dict:
    trainer = conf["trainer"]
    loader = train_loader(data, trainer, conf["seed"], accelerator.num_processes)
    steps = total_steps(trainer, len(loader))
    optimizer = build_optimizer(task, trainer["lr"], trainer["lr_backbone"], trainer["weight_decay"])
    scheduler = build_scheduler(optimizer, steps, trainer["warmup_ratio"])
    task, optimizer, loader, scheduler = accelerator.prepare(task, optimizer, loader, scheduler)
    log = MetricsLog(Path(conf["output_dir"]) / "metrics.jsonl", accelerator.is_main_process)
    run = Run(conf, accelerator, task, data, optimizer, scheduler, loader, log, load_resume(conf, accelerator, task, resume),
              steps)
    log.truncate_after(run.loop.step)
    with tqdm(total=steps, initial=run.loop.step, desc="training", disable=not accelerator.is_main_process) as bar:
        while run.loop.step < steps:
            train_one_epoch(run, bar)
    save_checkpoint(run)
    return evaluate(conf, accelerator.unwrap_model(task), data, accelerator)


def train_one_epoch(run: Run, bar: tqdm) -> None:
    """One pass over the (remaining) batches of the current epoch; stops early at ``run.steps``."""
    loop, accelerator, task = run.loop, run.accelerator, run.task
    run.loader.set_epoch(loop.epoch)
    batches = accelerator.skip_first_batches(run.loader, loop.batch_in_epoch) if loop.batch_in_epoch else run.loader
    task.train()
    for batch in batches:
        with accelerator.accumulate(task):
            terms = task(batch)
            check_finite(terms["loss"], loop.step)
            accelerator.backward(terms["loss"])
            if accelerator.sync_gradients and run.conf["trainer"].get("grad_clip"):
                accelerator.clip_grad_norm_(task.parameters(), run.conf["trainer"]["grad_clip"])
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad()
        loop.batch_in_epoch += 1
        run.log.add({k: float(v.detach()) for k, v in terms.items() if k == "loss" or k.endswith("_loss")})
        if accelerator.sync_gradients:
            loop.step += 1
            bar.update(1)
            after_step(run)
            if loop.step >= run.steps:
                return
    loop.epoch, loop.batch_in_epoch = loop.epoch + 1, 0


def after_step(run: Run) -> None:
    """Logging, periodic evaluation and checkpointing after an optimizer step."""
    trainer, loop = run.conf["trainer"], run.loop
    if loop.step % trainer["log_every"] == 0 or loop.step == run.steps:
        run.log.flush(loop.step, loop.epoch, run.scheduler.get_last_lr()[-1])
        for module in run.task.modules():
            if isinstance(module, EMCL):
                assert_same_on_all_ranks(module.mean, "EMCL running mean")
    if trainer.get("eval_every") and loop.step % trainer["eval_every"] == 0 and loop.step < run.steps:
        metrics = evaluate(run.conf, run.accelerator.unwrap_model(run.task), run.data, run.accelerator, write=False)
        run.log.write({"step": loop.step, "epoch": loop.epoch, **{f"eval/{k}": v for k, v in metrics.items()}})
        run.task.train()
    if trainer.get("save_every") and loop.step % trainer["save_every"] == 0 and loop.step < run.steps:
        save_checkpoint(run)


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss.detach()).all():
        raise FloatingPointError(f"non-finite loss {float(loss)} at step {step + 1}; the last good checkpoint "
                                 "is kept (resume=auto continues from it, perhaps with a lower trainer.lr)")


def save_checkpoint(run: Run) -> None:
    """accelerate state plus the task's files (tokenizer, answer vocabulary) and the resolved config
    (``multitask.load`` rebuilds the model from it), written atomically."""
    conf, accelerator, loop = run.conf, run.accelerator, run.loop
    root = Path(conf["output_dir"]) / "checkpoints"
    staging = ckpt.staging_dir(root, loop.step)
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()  # every rank's RNG state is in the folder before rank 0 finalizes it
    if accelerator.is_main_process:
        accelerator.unwrap_model(run.task).save_assets(staging)
        (staging / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(conf)))  # to rebuild the model
        meta = {"task": conf["task"]["name"], "step": loop.step, "epoch": loop.epoch,
                "batch_in_epoch": loop.batch_in_epoch}
        ckpt.finalize(root, loop.step, meta, conf["trainer"].get("checkpoints_total_limit"))
    accelerator.wait_for_everyone()


def resume_path(conf: dict) -> Path | None:
    """``resume``: null (fresh), ``auto`` (newest complete checkpoint of this run, if any), or a path."""
    choice = conf.get("resume")
    if not choice:
        return None
    path = ckpt.latest(Path(conf["output_dir"]) / "checkpoints") if choice == "auto" else Path(choice)
    if path is None:
        logger.info("resume=auto: no checkpoint in %s, starting fresh", conf["output_dir"])
        return None
    ckpt.read_meta(path, conf["task"]["name"])
    return path


def load_resume(conf: dict, accelerator: Accelerator, task: torch.nn.Module, path: Path | None) -> Loop:
    """Restore a checkpoint's training state; a weights-only folder (``multitask import-reference``) gives
    the weights and a new run from step 0."""
    if path is None:
        return Loop()
    meta = ckpt.read_meta(path, conf["task"]["name"])
    if meta.get("weights_only"):
        load_weights(accelerator.unwrap_model(task), path)
        logger.info("starting from the weights of %s (a weights-only checkpoint) at step 0", path)
        return Loop()
    accelerator.load_state(str(path))
    logger.info("resumed from %s at step %d", path, meta["step"])
    return Loop(step=meta["step"], epoch=meta["epoch"], batch_in_epoch=meta["batch_in_epoch"])


def load_weights(task: torch.nn.Module, folder: Path) -> None:
    """A checkpoint folder's model.safetensors into ``task``, with the mismatch named when it does not fit."""
    try:
        load_model(task, str(folder / "model.safetensors"))  # restores weights tied on save (the decoder's)
    except RuntimeError as err:
        raise ckpt.CheckpointError(f"{folder} does not fit the model this config builds (model.* and task.* must "
                                   f"match the checkpoint's config.yaml): {str(err)[:600]}") from err


def evaluate(conf: dict, task, data: TaskData, accelerator: Accelerator, write: bool = True) -> dict:
    """Run the task's evaluation; on the main process write its result into the run directory, print the table."""
    task.eval()
    result = task.evaluate(data, accelerator.device, conf["eval"], conf["trainer"]["num_workers"])
    if write and accelerator.is_main_process:
        write_result(Path(conf["output_dir"]), conf["task"]["name"], result)
        print(format_table(result.metrics), flush=True)
    return result.metrics


def write_result(out: Path, task: str, result: EvalResult) -> None:
    """eval.json, predictions.json (when there are predictions), similarity.safetensors (retrieval)."""
    write_json(out / "eval.json", {"task": task, "split": "test", "num_samples": result.num_samples,
                                   "metrics": result.metrics})
    if result.predictions:
        write_json(out / "predictions.json", result.predictions)
    if result.similarity is not None:
        write_similarity(out / "similarity.safetensors", result.similarity)


def evaluate_checkpoint(conf: dict, data: TaskData, accelerator: Accelerator) -> dict:
    """``eval_only=true checkpoint=DIR``: rebuild the task from the checkpoint's files, load the weights
    (EMCL mean included) and evaluate. A task=multi checkpoint serves each single-task evaluation."""
    if not conf.get("checkpoint"):
        raise ValueError("eval_only=true needs checkpoint=<checkpoint folder>")
    folder = Path(conf["checkpoint"]).expanduser()
    meta, requested = ckpt.read_meta(folder, None), conf["task"]
    if meta["task"] == "multi" and requested["name"] != "multi":
        task, _ = from_checkpoint(folder, head=requested["name"])
    else:
        ckpt.read_meta(folder, requested["name"])
        conf = with_checkpoint_architecture(conf, folder)
        task = build_task(conf, data, assets=folder)
        load_weights(task, folder)
    apply_inference_options(task, requested)  # the architecture is the checkpoint's; these follow the command
    check_feature_cache(conf, task)
    task.to(accelerator.device)
    return evaluate(conf, task, data, accelerator)
