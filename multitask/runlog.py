"""Run-directory outputs: logging setup, metrics.jsonl, eval.json, environment.json (rank 0 only)."""
from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import platform
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from multitask.dist import mean_over_ranks
from multitask.files import atomic_path, atomic_write_text
from multitask.types import Similarity

logger = logging.getLogger(__name__)


def _not_root_info(record: logging.LogRecord) -> bool:
    """Drop INFO chatter that libraries (open_clip) log on the root logger; keep their warnings."""
    return record.name != "root" or record.levelno >= logging.WARNING


def setup_logging(is_main: bool) -> None:
    """INFO to stderr on the main process, warnings only elsewhere."""
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_root_info)


class MetricsLog:
    """Averages loss terms over each logging window and over processes (a loss normalised by a global
    count is split across ranks), and appends one JSON line per log step. Every rank calls ``flush``.
    ``on_write`` also receives each record written (the experiment trackers)."""

    def __init__(self, path: Path, enabled: bool, on_write: Callable[[dict], None] | None = None) -> None:
        self.path, self.enabled, self.on_write = path, enabled, on_write
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)  # per term: task=multi logs each head's terms on its steps

    def add(self, terms: dict[str, float]) -> None:
        for k, v in terms.items():
            self.sums[k] += v
            self.counts[k] += 1

    def flush(self, step: int, epoch: int, lr: float, extra: dict | None = None) -> dict:
        record = {"step": step, "epoch": epoch, "lr": lr}
        means = {k: v / self.counts[k] for k, v in self.sums.items()}
        record.update(mean_over_ranks(dict(sorted(means.items()))))
        record.update(extra or {})
        self.sums.clear()
        self.counts.clear()
        self.write(record)
        return record

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint a resumed run restarts from)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if _step_of(line, self.path) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.on_write is not None:
                self.on_write(record)


def _step_of(line: str, path: Path) -> float:
    """A record's step; a blank or cut-off line (a run killed while appending) counts as past every step."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        if line.strip():
            logger.warning("%s: dropping an unreadable line %r", path, line[:80])
        return math.inf


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically; NaN becomes null so the file stays valid JSON."""
    clean = json.loads(json.dumps(payload), parse_constant=lambda _: None)
    atomic_write_text(path, json.dumps(clean, indent=2))


def write_similarity(path: Path, similarity: Similarity) -> None:
    """The score matrix as safetensors ({"similarity": (Q, V) float32}) with the text and video ids, in row and
    column order, as JSON lists in the metadata ("text_ids", "video_ids"); read it with ``read_similarity``."""
    with atomic_path(path) as tmp:
        save_file({"similarity": similarity.matrix.float().contiguous()}, str(tmp),
                  metadata={"text_ids": json.dumps(similarity.text_ids), "video_ids": json.dumps(similarity.video_ids)})


def read_similarity(path: Path) -> Similarity:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        return Similarity(f.get_tensor("similarity"), json.loads(meta["text_ids"]), json.loads(meta["video_ids"]))


PACKAGES = ("torchvision", "open_clip_torch", "transformers", "accelerate", "datasets", "decord", "av",
            "numpy", "sentencepiece", "pycocoevalcap", "hydra-core")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The framework checkout's commit (with "-dirty" for uncommitted changes), or None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def environment(num_processes: int, device: str, mixed_precision: str) -> dict:
    """What a result depends on besides the config: library versions, processes, threads, commit, command."""
    return {"python": platform.python_version(), "platform": platform.platform(), "commit": _git_commit(),
            "torch": torch.__version__, "cuda": torch.version.cuda,  # the build tag pip metadata leaves out
            "device": device, "num_processes": num_processes, "torch_threads": torch.get_num_threads(),
            "mixed_precision": mixed_precision, "packages": {p: _version(p) for p in PACKAGES},
            "argv": sys.argv}  # the command's arguments (the model card of `multitask export` shows them)
