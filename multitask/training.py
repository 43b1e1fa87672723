"""The training loop with Accelerate: plain functions over one ``Training`` record, no Trainer class.

A step is one optimizer update; ``trainer.batch_size`` is the global batch of one forward pass, split
across processes (``split_batches``), so every process count sees the same global batches in the same order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from multitask import checkpoint as ckpt
from multitask import tracking
from multitask.bad_videos import BadVideoLog
from multitask.compiling import compile_blocks
from multitask.dist import assert_same_on_all_ranks
from multitask.errors import ConfigError
from multitask.evaluation import evaluate
from multitask.optim import build_optimizer, build_scheduler
from multitask.runlog import MetricsLog
from multitask.streaming import StreamProgress, is_stream, stream_progress, stream_steps
from multitask.task import Task
from multitask.types import TaskData

logger = logging.getLogger(__name__)


@dataclass
class Loop:
    """Position of the training loop (what a checkpoint must restore besides accelerate state)."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def train_loader(data: TaskData, trainer: dict, seed: int, world: int) -> DataLoader:
    """Batches of ``trainer.batch_size`` (global); a training set smaller than that is one batch."""
    batch_size, n = trainer["batch_size"], len(data.train)
    if batch_size % world:
        raise ConfigError(f"trainer.batch_size={batch_size} must be divisible by the {world} processes")
    if n < batch_size:
        batch_size = n - n % world
        if batch_size == 0:
            raise ConfigError(f"{n} training samples cannot be split across {world} processes")
        logger.warning("only %d training samples, fewer than trainer.batch_size=%d: using batches of %d",
                       n, trainer["batch_size"], batch_size)
    # Its own generator: starting an epoch's iterator then draws (worker seeds) from it, not from the global RNG
    # that dropout uses, so a run resumed mid-epoch sees the same dropout masks as the uninterrupted run.
    return DataLoader(data.train, batch_sampler=data.train.batch_sampler(batch_size, seed),
                      num_workers=trainer["num_workers"], persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed))


def total_steps(trainer: dict, batches_per_epoch: int) -> int:
    per_epoch = batches_per_epoch // trainer["grad_accum"]
    if trainer["max_steps"]:
        return int(trainer["max_steps"])
    return per_epoch * trainer["max_epochs"]


@dataclass
class Training:
    """Everything the training loop functions share."""
    conf: dict
    accelerator: Accelerator
    task: Task
    data: TaskData
    optimizer: torch.optim.Optimizer
    scheduler: object
    loader: DataLoader
    log: MetricsLog
    loop: Loop
    steps: int
    bad: BadVideoLog | None  # map-style datasets: videos that fail while training
    stream: StreamProgress | None = None  # data=shards: the readers' states and counters


def train(conf: dict, task: Task, data: TaskData, accelerator: Accelerator,
          resume: Resume | None = None) -> dict:
    trainer = conf["trainer"]
    stream = stream_progress(conf, data, accelerator.process_index, accelerator.num_processes,
                             resume.meta.get("stream") if resume else None, accelerator.is_main_process) \
        if is_stream(data) else None
    loader = stream.stream.loader() if stream else train_loader(data, trainer, conf["seed"], accelerator.num_processes)
    steps = stream_steps(trainer) if stream else total_steps(trainer, len(loader))
    optimizer = build_optimizer(task, trainer["lr"], trainer["lr_backbone"], trainer["weight_decay"])
    scheduler = build_scheduler(optimizer, steps, trainer["warmup_ratio"])
    if trainer["compile"]:  # in place: the module names, and so the checkpoints, stay as without
        logger.info("trainer.compile: %d transformer blocks compiled", len(compile_blocks(task.backbone)))
    if stream:  # each process reads its own shards: the loader is not accelerate's
        task, optimizer, scheduler = accelerator.prepare(task, optimizer, scheduler)
    else:
        task, optimizer, loader, scheduler = accelerator.prepare(task, optimizer, loader, scheduler)
    out = Path(conf["output_dir"])
    log = MetricsLog(out / "metrics.jsonl", accelerator.is_main_process, partial(tracking.log_record, accelerator))
    bad = None if stream else BadVideoLog(out / "skipped_videos.json", data.skipped, conf["data"]["max_bad_fraction"],
                                          accelerator.is_main_process)
    training = Training(conf, accelerator, task, data, optimizer, scheduler, loader, log,
                        load_resume(accelerator, task, resume), steps, bad, stream)
    for written in (log, stream) if stream else (log,):
        written.truncate_after(training.loop.step)
    if bad is not None:
        bad.restore(resume.meta.get("bad_videos") if resume is not None else None)
    tracking.start(accelerator, trainer["project_name"], conf, training.loop.step)
    with tqdm(total=steps, initial=training.loop.step, desc="training", disable=not accelerator.is_main_process) as bar:
        if stream:
            train_stream(training, bar)
        else:
            while training.loop.step < steps:
                train_one_epoch(training, bar)
    save_checkpoint(training)
    if not has_test(data):
        logger.info("no test split (data=%s): the run ends without an evaluation", conf["data"]["name"])
    metrics = evaluate(conf, accelerator.unwrap_model(task), data, accelerator) if has_test(data) else {}
    tracking.finish(accelerator, metrics, training.loop.step)
    return metrics


def has_test(data: TaskData) -> bool:
    """Whether there is anything to evaluate on (data=shards has no test split)."""
    return data.test is not None or any(part.test is not None for part in data.parts.values())


def start_epoch(loader: DataLoader, epoch: int) -> DataLoader:
    """Give the sampler and the dataset the epoch (frame sampling, augmentation and bad-video substitutes are
    drawn from (seed, epoch, index)). The dataset is told directly: accelerate's ``set_epoch`` reaches it only
    for some sampler chains (not for a batch sampler sharded across processes), so without this the dataset's
    epoch would depend on the process count and on whether the epoch was resumed part-way."""
    loader.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
    return loader


def train_one_epoch(training: Training, bar: tqdm) -> None:
    """One pass over the (remaining) batches of the current epoch; stops early at ``training.steps``."""
    loop, accelerator, task = training.loop, training.accelerator, training.task
    loader = start_epoch(training.loader, loop.epoch)
    batches = accelerator.skip_first_batches(loader, loop.batch_in_epoch) if loop.batch_in_epoch else loader
    task.train()
    for batch in batches:
        training.bad.update(batch.get("failed", []), loop.step + 1)
        if micro_step(training, batch, bar):
            return
    loop.epoch, loop.batch_in_epoch = loop.epoch + 1, 0


def train_stream(training: Training, bar: tqdm) -> None:
    """data=shards: batches from this process's readers until ``training.steps``."""
    training.task.train()
    for batch in training.loader:
        if micro_step(training, training.stream.consume(batch, training.accelerator.device), bar):
            return


def micro_step(training: Training, batch: dict, bar: tqdm) -> bool:
    """Forward and backward of one batch, an optimizer step every ``trainer.grad_accum`` batches; True when
    the run's last step is done."""
    loop, accelerator, task = training.loop, training.accelerator, training.task
    with accelerator.accumulate(task):
        terms = task(batch)
        check_finite(terms["loss"], loop.step)
        accelerator.backward(terms["loss"])
        if accelerator.sync_gradients and training.conf["trainer"]["grad_clip"]:
            accelerator.clip_grad_norm_(task.parameters(), training.conf["trainer"]["grad_clip"])
        training.optimizer.step()
        training.scheduler.step()
        training.optimizer.zero_grad()
    loop.batch_in_epoch += 1
    training.log.add({k: float(v.detach()) for k, v in terms.items() if k == "loss" or k.endswith("_loss")})
    if not accelerator.sync_gradients:
        return False
    loop.step += 1
    bar.update(1)
    after_step(training)
    return loop.step >= training.steps


def after_step(training: Training) -> None:
    """Logging, periodic evaluation and checkpointing after an optimizer step."""
    trainer, loop = training.conf["trainer"], training.loop
    if loop.step % trainer["log_every"] == 0 or loop.step == training.steps:
        extra = training.stream.log_fields(loop.step) if training.stream else None  # its "epoch" replaces ours
        training.log.flush(loop.step, loop.epoch, training.scheduler.get_last_lr()[-1], extra)
        emcl = training.accelerator.unwrap_model(training.task).emcl
        if emcl is not None:
            assert_same_on_all_ranks(emcl.mean, "EMCL running mean")
    if trainer["eval_every"] and loop.step % trainer["eval_every"] == 0 and loop.step < training.steps \
            and has_test(training.data):
        task = training.accelerator.unwrap_model(training.task)
        metrics = evaluate(training.conf, task, training.data, training.accelerator, write=False)
        training.log.write({"step": loop.step, "epoch": loop.epoch, **{f"eval/{k}": v for k, v in metrics.items()}})
        training.task.train()
    if trainer["save_every"] and loop.step % trainer["save_every"] == 0 and loop.step < training.steps:
        save_checkpoint(training)


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss.detach()).all():
        raise FloatingPointError(f"non-finite loss {float(loss)} at step {step + 1}; the last good checkpoint "
                                 "is kept (resume=auto continues from it, perhaps with a lower trainer.lr)")


def save_checkpoint(training: Training) -> None:
    """accelerate state plus the task's files (tokenizer, answer vocabulary) and the resolved config
    (``multitask.load`` rebuilds the model from it), written atomically."""
    conf, accelerator, loop = training.conf, training.accelerator, training.loop
    root = Path(conf["output_dir"]) / "checkpoints"
    staging = ckpt.staging_dir(root, loop.step)
    accelerator.save_state(str(staging))
    position = {"stream": training.stream.checkpoint_state()} if training.stream else \
        {"bad_videos": training.bad.state()}
    accelerator.wait_for_everyone()  # every rank's RNG state is in the folder before rank 0 finalizes it
    if accelerator.is_main_process:
        accelerator.unwrap_model(training.task).save_assets(staging)
        (staging / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(conf)))  # to rebuild the model
        meta = {"task": conf["task"]["name"], "step": loop.step, "epoch": loop.epoch,
                "batch_in_epoch": loop.batch_in_epoch, **position}
        ckpt.finalize(root, loop.step, meta, conf["trainer"]["checkpoints_total_limit"])
    accelerator.wait_for_everyone()


@dataclass
class Resume:
    """The checkpoint a run starts from, validated for its task."""
    path: Path
    meta: dict


def resume_point(conf: dict) -> Resume | None:
    """``resume``: null (fresh), ``auto`` (newest complete checkpoint of this run, if any), or a path."""
    choice = conf["resume"]
    if not choice:
        return None
    path = ckpt.latest(Path(conf["output_dir"]) / "checkpoints") if choice == "auto" else Path(choice)
    if path is None:
        logger.info("resume=auto: no checkpoint in %s, starting fresh", conf["output_dir"])
        return None
    return Resume(path, ckpt.read_meta(path, conf["task"]["name"]))


def load_resume(accelerator: Accelerator, task: Task, resume: Resume | None) -> Loop:
    """Restore a checkpoint's training state; a weights-only folder (``multitask import-reference``) gives
    the weights and a new run from step 0."""
    if resume is None:
        return Loop()
    path, meta = resume.path, resume.meta
    if meta.get("weights_only"):
        ckpt.load_weights(accelerator.unwrap_model(task), path)
        logger.info("starting from the weights of %s (a weights-only checkpoint) at step 0", path)
        return Loop()
    accelerator.load_state(str(path))
    logger.info("resumed from %s at step %d", path, meta["step"])
    return Loop(step=meta["step"], epoch=meta["epoch"], batch_in_epoch=meta["batch_in_epoch"])


