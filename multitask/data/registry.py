"""Map ``data.name`` to prepared datasets (plain-dict registry)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import datasets

from multitask.data import msrvtt
from multitask.data.checks import check_videos
from multitask.data.tables import cache_dir
from multitask.data.video_text import VideoTextDataset

logger = logging.getLogger(__name__)


@dataclass
class RetrievalData:
    train: VideoTextDataset
    test: VideoTextDataset
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


DATA = {"msrvtt": _prepare_msrvtt, "synthetic": _prepare_synthetic}


def _synthetic_attributes(root: Path, video_ids: list[str]) -> list[dict] | None:
    path = root / "synthetic_attributes.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    return [table[v] for v in video_ids]


def _drop_bad(rows: datasets.Dataset, path_of: Callable[[str], str], infos: dict) -> datasets.Dataset:
    return rows.select([i for i, v in enumerate(rows["video_id"]) if path_of(v) in infos])


def build_retrieval_data(cfg: dict, show_progress: bool = True) -> RetrievalData:
    """Parse annotations, check every video once (``data.on_bad_video``) and build the datasets."""
    if cfg["name"] not in DATA:
        raise ValueError(f"unknown data {cfg['name']!r}; known: {', '.join(DATA)}")
    root = DATA[cfg["name"]](cfg, show_progress)
    train_rows, test_rows = msrvtt.retrieval_tables(root, cfg.get("train_list", "9k"))
    path_of = partial(msrvtt.video_path, root)
    paths = [path_of(v) for v in list(train_rows["video_id"]) + list(test_rows["video_id"])]
    infos, bad = check_videos(paths, cache_dir(root) / "video_probe.json", cfg["on_bad_video"], show_progress)
    if bad:
        train_rows, test_rows = (_drop_bad(rows, path_of, infos) for rows in (train_rows, test_rows))
    common = dict(path_of=path_of, infos=infos, num_frames=cfg["num_frames"], image_size=cfg["image_size"])
    train = VideoTextDataset(train_rows, train=True, seed=cfg["seed"], augment=cfg.get("augment", False), **common)
    test = VideoTextDataset(test_rows, train=False, **common)
    return RetrievalData(train, test, _synthetic_attributes(root, test.video_ids()), bad)
