"""Write a prepared dataset's training split as tar shards in the video2dataset layout (``scripts/make_shards.py``).

Each training video is one sample: ``{key}.mp4`` (the file's bytes as they are; another container keeps its
own extension, e.g. ``.avi``), ``{key}.txt`` (its first caption) and ``{key}.json`` (``video_id``, ``caption``,
``captions``: all of them). Keys are the video ids with characters other than letters, digits, ``-`` and ``_``
replaced (tar readers take a member's name up to its first dot as the sample key).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import webdataset as wds
from tqdm.auto import tqdm

from multitask.data.video_text import VideoTextDataset
from multitask.errors import DataError
from multitask.files import atomic_write_text

VIDEO_MEMBERS = {".mp4": "mp4", ".webm": "webm", ".mkv": "mkv", ".avi": "avi", ".mov": "mov"}
MANIFEST = "shards.json"


def sample_key(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", video_id)


def _sample(train: VideoTextDataset, row: dict) -> dict:
    path = Path(train.path_of(row["video_id"]))
    captions = list(row["captions"])
    meta = {"video_id": row["video_id"], "caption": captions[0], "captions": captions}
    return {"__key__": sample_key(row["video_id"]), VIDEO_MEMBERS.get(path.suffix.lower(), "mp4"): path.read_bytes(),
            "txt": captions[0].encode(), "json": json.dumps(meta).encode()}


def write_shards(train: VideoTextDataset, out: Path, per_shard: int, show_progress: bool = True) -> str:
    """``train``'s samples into ``out/00000.tar``, ``00001.tar``, ... (``per_shard`` each; the same bytes every
    time) and ``out/shards.json`` (the count of each shard and the ``data.shards`` pattern); returns the pattern."""
    if per_shard < 1:
        raise DataError(f"samples per shard must be at least 1, got {per_shard}")
    keys = [sample_key(v) for v in train.video_ids()]
    if len(set(keys)) < len(keys):
        raise DataError("two video ids map to the same shard key (they differ only in characters other than "
                        "letters, digits, '-' and '_'); rename the videos")
    out.mkdir(parents=True, exist_ok=True)
    counts: list[int] = []
    with wds.ShardWriter(str(out / "%05d.tar"), maxcount=per_shard, verbose=0, encoder=False, mtime=0) as sink:
        for k, row in enumerate(tqdm(train.rows, desc="writing shards", disable=not show_progress)):
            if k % per_shard == 0:
                counts.append(0)
            sink.write(_sample(train, row))
            counts[-1] += 1
    last = len(counts) - 1
    pattern = str(out / (f"{{00000..{last:05d}}}.tar" if last > 0 else "00000.tar"))
    atomic_write_text(out / MANIFEST, json.dumps({"pattern": pattern, "samples": sum(counts), "shards": counts},
                                                 indent=2))
    return pattern
