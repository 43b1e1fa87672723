"""Evaluation in a run: a task's ``EvalResult`` computed on every process, written by the main one."""
from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator

from multitask.metrics import format_table
from multitask.runlog import write_json, write_similarity
from multitask.task import Task
from multitask.types import EvalResult, TaskData


def evaluate(conf: dict, task: Task, data: TaskData, accelerator: Accelerator, write: bool = True) -> dict:
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
                                   "num_skipped": len(result.skipped), "skipped": result.skipped,
                                   "metrics": result.metrics})
    if result.predictions:
        write_json(out / "predictions.json", result.predictions)
    if result.similarity is not None:
        write_similarity(out / "similarity.safetensors", result.similarity)
