"""``multitask doctor``: check a dataset before anyone trains on it.

For every task the layout serves: the annotations parse, counts per split, duplicate ids, ids in both
splits, videos present and decodable, caption and question statistics. Problems are collected (not
raised one at a time) so one run lists everything that is wrong.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multitask.data.checks import check_videos
from multitask.data.registry import TABLES, VIDEOS, layout_of
from multitask.data.tables import AnnotationError, cache_dir


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.lines.append(text)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.lines.append(f"PROBLEM: {text}")


def _stats(values: list[int]) -> str:
    return f"min {min(values)}, mean {np.mean(values):.1f}, max {max(values)}" if values else "none"


def _check_ids(report: Report, task: str, splits: dict[str, list[str]], one_row_per_video: bool) -> None:
    for split, ids in splits.items():
        repeated = [v for v, n in Counter(ids).items() if n > 1]
        if repeated and one_row_per_video:
            report.problem(f"{task} {split}: {len(repeated)} ids appear more than once, e.g. {', '.join(repeated[:5])}")
    both = sorted(set(splits["train"]) & set(splits["test"]))
    if both:
        report.problem(f"{task}: {len(both)} videos are in both train and test, e.g. {', '.join(both[:5])}")


def _text_stats(report: Report, task: str, train, test) -> None:
    if task == "qa":
        kinds = Counter(test["category"])
        seen = set(train["answer"])
        unseen = sum(a not in seen for a in test["answer"])
        report.info(f"  questions: train {len(train)}, test {len(test)}; types {dict(kinds)}; "
                    f"{len(seen)} distinct training answers; {unseen} test answers never seen in training")
        return
    for split, rows in (("train", train), ("test", test)):
        groups = list(rows["captions"])
        words = [len(c.split()) for g in groups for c in g]
        report.info(f"  {split} captions per video: {_stats([len(g) for g in groups])}; words per caption: "
                    f"{_stats(words)}")


def _check_task(report: Report, task: str, cfg: dict, root: Path) -> set[str]:
    """Check one task's annotations; returns the video paths they need."""
    try:
        train, test = TABLES[layout_of(cfg)][task](root, cfg)
    except (AnnotationError, FileNotFoundError) as err:
        report.problem(f"{task}: {err}")
        return set()
    report.info(f"{task}: train {len(train)} rows, test {len(test)} rows")
    _check_ids(report, task, {"train": list(train["video_id"]), "test": list(test["video_id"])}, task != "qa")
    _text_stats(report, task, train, test)
    path_of, index = VIDEOS[layout_of(cfg)](root, cfg)
    ids = set(train["video_id"]) | set(test["video_id"])
    if index is not None:
        unfound = sorted(ids - set(index))
        if unfound:
            report.problem(f"{task}: {len(unfound)} videos have no file, e.g. {', '.join(unfound[:5])}")
        ids -= set(unfound)
    return {path_of(v) for v in ids}


def diagnose(data: str, root: Path, video_root: Path | None = None, show_progress: bool = True) -> Report:
    """Check the dataset ``data`` (a layout name, or msrvtt_qa) at ``root``."""
    cfg = {"name": data, "root": str(root), "video_root": str(video_root) if video_root else None}
    layout = layout_of(cfg)
    if layout not in TABLES:
        raise ValueError(f"unknown data {data!r}; known: {', '.join([*TABLES, 'msrvtt_qa'])}")
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist")
    report = Report()
    tasks = ["qa"] if data == "msrvtt_qa" else list(TABLES[layout])
    if data == "msrvtt" and not (root / "msrvtt_qa").is_dir():
        tasks.remove("qa")
        report.info("no msrvtt_qa/ folder: QA annotations not checked")
    paths: set[str] = set()
    for task in tasks:
        paths |= _check_task(report, task, cfg, root)
    _, bad = check_videos(sorted(paths), cache_dir(root) / "video_probe.json", "skip", show_progress)
    report.info(f"videos: {len(paths)} referenced, {len(paths) - len(bad)} decodable")
    for path, reason in sorted(bad.items()):
        report.problem(f"video {path}: {reason}")
    return report
