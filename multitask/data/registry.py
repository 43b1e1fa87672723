"""Map ``data.name`` and ``task.name`` to prepared datasets (plain-dict registries).

``data.name`` decides how the data root is prepared (checked, or generated for ``synthetic``); the task
decides which annotation layout under it is read: MSR-VTT retrieval (9k / 1k-A), the MSR-VTT captioning
split, or MSRVTT-QA. ``synthetic`` writes all three layouts; ``msrvtt`` and ``msrvtt_qa`` name real roots.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import datasets

from multitask.data import msrvtt, msrvtt_qa
from multitask.data.checks import check_videos
from multitask.data.tables import cache_dir
from multitask.data.video_text import QADataset, VideoDataset, VideoTextDataset

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    train: VideoDataset
    test: VideoDataset
    attributes: list[dict] | None = None  # per test video; synthetic data only (attribute probes)
    skipped: dict[str, str] = field(default_factory=dict)  # bad video path -> reason


def _prepare_msrvtt(cfg: dict, show_progress: bool) -> Path:
    root = Path(cfg["root"]).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root} does not exist; see the README for the MSR-VTT layout")
    return root


def _prepare_synthetic(cfg: dict, show_progress: bool) -> Path:
    from multitask.data.synthetic import generate_synthetic

    return Path(generate_synthetic(Path(cfg["root"]).expanduser(), seed=cfg["seed"], show_progress=show_progress,
                                   **cfg.get("generator", {})))


DATA = {"msrvtt": _prepare_msrvtt, "msrvtt_qa": _prepare_msrvtt, "synthetic": _prepare_synthetic}

# task -> (annotation tables of a root, dataset class)
TABLES: dict[str, tuple[Callable, type[VideoDataset]]] = {
    "retrieval": (lambda root, cfg: msrvtt.retrieval_tables(root, cfg.get("train_list", "9k")), VideoTextDataset),
    "caption": (lambda root, cfg: msrvtt.caption_tables(root), VideoTextDataset),
    "qa": (lambda root, cfg: msrvtt_qa.qa_tables(root), QADataset),
}


def _synthetic_attributes(root: Path, video_ids: list[str]) -> list[dict] | None:
    path = root / "synthetic_attributes.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    return [table[v] for v in video_ids]


def _drop_bad(rows: datasets.Dataset, path_of: Callable[[str], str], infos: dict) -> datasets.Dataset:
    return rows.select([i for i, v in enumerate(rows["video_id"]) if path_of(v) in infos])


def build_data(task: str, cfg: dict, show_progress: bool = True) -> TaskData:
    """Parse the task's annotations, check every video once (``data.on_bad_video``), build the datasets."""
    if cfg["name"] not in DATA:
        raise ValueError(f"unknown data {cfg['name']!r}; known: {', '.join(DATA)}")
    if task not in TABLES:
        raise ValueError(f"no data layout for task {task!r}; known: {', '.join(TABLES)}")
    root = DATA[cfg["name"]](cfg, show_progress)
    tables, dataset_class = TABLES[task]
    train_rows, test_rows = tables(root, cfg)
    path_of = partial(msrvtt.video_path, root)
    paths = [path_of(v) for v in dict.fromkeys(list(train_rows["video_id"]) + list(test_rows["video_id"]))]
    infos, bad = check_videos(paths, cache_dir(root) / "video_probe.json", cfg["on_bad_video"], show_progress)
    if bad:
        train_rows, test_rows = (_drop_bad(rows, path_of, infos) for rows in (train_rows, test_rows))
    common = dict(path_of=path_of, infos=infos, num_frames=cfg["num_frames"], image_size=cfg["image_size"])
    train = dataset_class(train_rows, train=True, seed=cfg["seed"], augment=cfg.get("augment", False), **common)
    test = dataset_class(test_rows, train=False, **common)
    return TaskData(train, test, _synthetic_attributes(root, test.video_ids()), bad)
