"""``multitask doctor``: check a dataset before anyone trains on it.

For every task the layout serves: the annotations parse, counts per split, duplicate ids, ids in both
splits, videos present and decodable, caption and question statistics. Problems are collected (not
raised one at a time) so one run lists everything that is wrong. The quick video check decodes each
file's first and last frame, as training's check does; ``full`` decodes every frame of every video (in
isolated decoders, in parallel), which finds damage in between.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multitask.data import activitynet, didemo, msrvtt
from multitask.data.checks import check_videos
from multitask.data.msvd import read_list
from multitask.data.registry import TABLES, VIDEOS, layout_of
from multitask.data.tables import cache_dir, read_json
from multitask.decoding import DecoderSpec, map_decoded
from multitask.errors import ConfigError, MissingInputError

# layouts whose loaders read an id list beside the captions (and drop repeated or uncaptioned ids): split -> ids
LISTED_IDS = {
    "activitynet": lambda root: {s: [str(v) for v in read_json(root / f[0])] for s, f in activitynet.SPLITS.items()},
    "didemo": lambda root: {s: read_list(root / f[0]) for s, f in didemo.SPLITS.items()},
}


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


def _repeated(ids: list[str]) -> list[str]:
    return [v for v, n in Counter(ids).items() if n > 1]


def _check_ids(report: Report, task: str, splits: dict[str, list[str]], one_row_per_video: bool) -> None:
    for split, ids in splits.items():
        repeated = _repeated(ids)
        if repeated and one_row_per_video:
            report.problem(f"{task} {split}: {len(repeated)} ids appear more than once, e.g. {', '.join(repeated[:5])}")
    both = sorted(set(splits["train"]) & set(splits["test"]))
    if both:
        report.problem(f"{task}: {len(both)} videos are in both train and test, e.g. {', '.join(both[:5])}")


def _check_listed(report: Report, task: str, listed: dict[str, list[str]], kept: dict[str, set[str]]) -> None:
    """Id lists as written: repeated ids, and ids with no captions (which the loader leaves out)."""
    for split, ids in listed.items():
        repeated = _repeated(ids)
        if repeated:
            report.problem(f"{task} {split}: {len(repeated)} ids appear more than once in the id list, "
                           f"e.g. {', '.join(repeated[:5])}")
        uncaptioned = [v for v in dict.fromkeys(ids) if v not in kept[split]]
        if uncaptioned:
            report.problem(f"{task} {split}: {len(uncaptioned)} listed ids have no captions, "
                           f"e.g. {', '.join(uncaptioned[:5])}")


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
    layout = layout_of(cfg)
    train, test = TABLES[layout][task](root, cfg)
    report.info(f"{task}: train {len(train)} rows, test {len(test)} rows")
    _check_ids(report, task, {"train": list(train["video_id"]), "test": list(test["video_id"])}, task != "qa")
    if layout in LISTED_IDS:
        _check_listed(report, task, LISTED_IDS[layout](root), {"train": set(train["video_id"]),
                                                               "test": set(test["video_id"])})
    _text_stats(report, task, train, test)
    path_of, index = VIDEOS[layout](root, cfg)
    ids = set(train["video_id"]) | set(test["video_id"])
    if index is not None:
        unfound = sorted(ids - set(index))
        if unfound:
            report.problem(f"{task}: {len(unfound)} videos have no file, e.g. {', '.join(unfound[:5])}")
        ids -= set(unfound)
    return {path_of(v) for v in ids}


def diagnose(data: str, root: Path, decoder: DecoderSpec, video_root: Path | None = None, full: bool = False,
             show_progress: bool = True) -> Report:
    """Check the dataset ``data`` (a layout name, or msrvtt_qa) at ``root``; ``full``: decode every frame."""
    cfg = {"name": data, "root": str(root), "video_root": str(video_root) if video_root else None}
    layout = layout_of(cfg)
    if layout not in TABLES:
        raise ConfigError(f"unknown data {data!r}; known: {', '.join([*TABLES, 'msrvtt_qa'])}")
    if not root.is_dir():
        raise MissingInputError(f"data root {root} does not exist")
    report = Report()
    tasks = ["qa"] if data == "msrvtt_qa" else list(TABLES[layout])
    if data == "msrvtt" and not (root / "msrvtt_qa").is_dir():
        tasks.remove("qa")
        report.info("no msrvtt_qa/ folder: QA annotations not checked")
    nine_k, seven_k = (msrvtt.TRAIN_LISTS[k] for k in ("9k", "7k"))
    if data == "msrvtt" and not (root / nine_k).is_file() and (root / seven_k).is_file():
        cfg["train_list"] = "7k"
        report.info(f"no {nine_k}: retrieval checked with {seven_k}")
    paths: set[str] = set()
    for task in tasks:
        try:
            paths |= _check_task(report, task, cfg, root)
        except Exception as err:  # whatever breaks one task's check is reported; the others still run
            report.problem(f"{task}: {err if isinstance(err, (OSError, ValueError)) else repr(err)}")
    _check_videos(report, sorted(paths), cache_dir(root) / "video_probe.json", decoder, full, show_progress)
    return report


def _check_videos(report: Report, paths: list[str], cache_file: Path, decoder: DecoderSpec, full: bool,
                  show_progress: bool) -> None:
    _, bad = check_videos(paths, cache_file, "skip", decoder, show_progress)
    if full:
        decoded = map_decoded("decode_all_frames", [p for p in paths if p not in bad], decoder,
                              show_progress=show_progress, desc="decoding every frame")
        bad.update({p: f"damaged inside ({r})" for p, r in decoded.items() if isinstance(r, str)})
        report.info(f"videos: {len(paths)} referenced, {len(paths) - len(bad)} decode completely "
                    "(every frame decoded)")
    else:
        report.info(f"videos: {len(paths)} referenced, {len(paths) - len(bad)} decodable (quick check: first and "
                    "last frame only; --full decodes every frame)")
    for path, reason in sorted(bad.items()):
        report.problem(f"video {path}: {reason}")
