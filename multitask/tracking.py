"""Experiment tracking (``trainer.log_with``) through Accelerate's trackers, beside ``metrics.jsonl``.

Rank 0 sends the trackers every record ``metrics.jsonl`` gets (loss terms, learning rate, epoch, periodic
``eval/...`` metrics) under the same names and steps, the final evaluation as ``eval/...`` at the last step,
and the resolved config, flattened, as hyper-parameters. Their files go under ``{output_dir}/tracking``.
A run resumed from a checkpoint continues the tracker runs it started: TensorBoard hides what the interrupted
run wrote past the checkpoint's step, the others reopen their run by the id kept in ``tracking/run_ids.json``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import (ProjectConfiguration, is_aim_available, is_mlflow_available, is_tensorboard_available,
                              is_wandb_available)

from multitask.errors import ConfigError
from multitask.files import atomic_write_text

logger = logging.getLogger(__name__)

TRACKERS: dict[str, Callable[[], bool]] = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                                           "mlflow": is_mlflow_available, "aim": is_aim_available}
TRACKING_DIR = "tracking"
RUN_IDS = "run_ids.json"

# How each tracker names its run (read after it starts), and the keyword arguments that reopen that run.
RUN_ID: dict[str, Callable[[GeneralTracker], str]] = {
    "wandb": lambda t: t.run.id, "mlflow": lambda t: t.active_run.info.run_id, "aim": lambda t: t.writer.hash}
REOPEN: dict[str, Callable[[str], dict]] = {
    "wandb": lambda run_id: {"id": run_id, "resume": "allow"}, "mlflow": lambda run_id: {"run_id": run_id},
    "aim": lambda run_id: {"run_hash": run_id}}


def tracker_names(log_with: str | list[str] | None) -> list[str]:
    """``trainer.log_with`` (null, a name, or a list of names) as a list; one ConfigError, before anything runs,
    for an unknown name or a tracker whose package is not installed."""
    names = list(dict.fromkeys([log_with] if isinstance(log_with, str) else log_with or []))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"unknown trainer.log_with {', '.join(map(repr, unknown))}; known: {', '.join(TRACKERS)}")
    missing = [n for n in names if not TRACKERS[n]()]
    if missing:
        raise ConfigError(f"trainer.log_with={','.join(missing)} needs the {', '.join(missing)} package: pip install "
                          f"{' '.join(missing)} (or pip install 'emcl-multitask[tracking]')")
    return names


def accelerator_options(log_with: str | list[str] | None, output_dir: str | Path) -> dict:
    """``Accelerator`` keyword arguments that turn the trackers on (none for an empty ``log_with``)."""
    names = tracker_names(log_with)
    if not names:
        return {}
    out = Path(output_dir)
    return {"log_with": names,
            "project_config": ProjectConfiguration(project_dir=str(out), logging_dir=str(out / TRACKING_DIR))}


def hyperparameters(conf: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """The config flattened to dotted keys (``trainer.lr``); values trackers cannot take (null, lists) as JSON."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in conf.items():
        if isinstance(value, dict):
            out.update(hyperparameters(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return out


def _init_kwargs(names: list[str], project_name: str, run_name: str, folder: Path, step: int) -> dict[str, dict]:
    """Per tracker: the run's name and where its files go; when resuming at ``step`` > 0, what reopens its run.
    (Aim names its run after the project, its experiment; MLflow stores where MLFLOW_TRACKING_URI says.)"""
    kwargs = {"wandb": {"name": run_name, "dir": str(folder)}, "mlflow": {"run_name": run_name},
              "aim": {"experiment": project_name}}
    if not step:
        return kwargs
    kwargs["tensorboard"] = {"purge_step": step + 1}  # events past the checkpoint are hidden when read
    ids = json.loads((folder / RUN_IDS).read_text()) if (folder / RUN_IDS).is_file() else {}
    for name in names:
        if name in ids and name in REOPEN:
            kwargs[name] = {**kwargs[name], **REOPEN[name](ids[name])}
    return kwargs


def start(accelerator: Accelerator, project_name: str, conf: dict, step: int) -> None:
    """Open the trackers' runs (rank 0; nothing without trainer.log_with) with the config as hyper-parameters.
    The run is named after ``output_dir``; ``step`` is where training starts (a resumed run's checkpoint)."""
    if not accelerator.log_with or not accelerator.is_main_process:
        return
    folder = Path(conf["output_dir"]) / TRACKING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    names = [str(n) for n in accelerator.log_with]
    accelerator.init_trackers(project_name, config=hyperparameters(conf),
                              init_kwargs=_init_kwargs(names, project_name, str(conf["output_dir"]), folder, step))
    ids = {t.name: RUN_ID[t.name](t) for t in accelerator.trackers if t.name in RUN_ID}
    atomic_write_text(folder / RUN_IDS, json.dumps(ids, indent=2))
    logger.info("tracking with %s under %s", ", ".join(names), folder)


def log_record(accelerator: Accelerator, record: dict) -> None:
    """A ``metrics.jsonl`` record ({"step", ...}) to the trackers, at its step (a no-op without trackers)."""
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def finish(accelerator: Accelerator, metrics: dict[str, float], step: int) -> None:
    """The final evaluation as ``eval/...`` at ``step``, then close the trackers (every rank calls this)."""
    if not accelerator.log_with:
        return
    log_record(accelerator, {"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
    accelerator.end_training()
