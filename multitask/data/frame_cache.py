"""Sampled, resized frames stored once as uint8 arrays, so training and evaluation skip video decoding.

    python scripts/cache_frames.py --data msrvtt --root /data/msrvtt --out /data/msrvtt-frames \\
        --num-frames 12 --image-size 224
    accelerate launch train.py task=retrieval data=msrvtt data.root=/data/msrvtt data.frame_cache=/data/msrvtt-frames

Under DIR: per video one ``.npy``, the (t, h, w, 3) uint8 frames ``decode_frames`` returns for the
segment-centre sampling (no randomness, no augmentation, the row's ``max_seconds``), and ``manifest.json``
with ``num_frames``, ``image_size`` and per video its file, frame count and ``max_seconds``. Loading
applies ``frames_to_clip``: a clip equals ``load_clip(path, info, num_frames, image_size)`` bit for bit.
Training from the cache therefore takes the segment centres (no temporal jitter, as the reference EMCL
code samples training frames) and cannot augment.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from multitask.decoding import DecoderSpec, iter_decoded
from multitask.errors import DataError
from multitask.files import atomic_path, atomic_write_text
from multitask.video import frame_request, frames_to_clip
from multitask.video_io import VideoInfo

MANIFEST = "manifest.json"
SAVE_EVERY = 50  # videos between manifest rewrites while building


class FrameCacheError(DataError):
    """A frame cache that does not match the run's frames or image size, or lacks videos the run needs."""


@dataclass(frozen=True)
class CacheItem:
    video_id: str
    path: str
    info: VideoInfo
    max_seconds: float | None = None


def file_name(video_id: str) -> str:
    """A safe, unique file name for any video id (ids may hold '/', '@' or other odd characters)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", video_id).lstrip(".-")[:80] or "video"
    return f"{readable}-{hashlib.sha1(video_id.encode()).hexdigest()[:12]}.npy"


def rebuild_command(cfg: dict, task: str) -> str:
    """The scripts/cache_frames.py command line that builds (or completes) the cache a data config names."""
    args = ["--data", cfg["name"], "--task", task, "--root", str(cfg["root"])]
    if cfg.get("video_root"):
        args += ["--video-root", str(cfg["video_root"])]
    if cfg["name"] == "synthetic":
        args += ["--seed", str(cfg["seed"]), "--layout", cfg["layout"],
                 "--generator", f"'{json.dumps(dict(cfg['generator']), separators=(',', ':'))}'"]
    args += ["--out", str(cfg["frame_cache"]), "--num-frames", str(cfg["num_frames"]),
             "--image-size", str(cfg["image_size"])]
    return "python scripts/cache_frames.py " + " ".join(args)


def read_manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())


def write_manifest(root: Path, num_frames: int, image_size: int, videos: dict[str, dict], **settings) -> None:
    """Atomic: a reader (or a resumed build) sees the old manifest or the new one, never half of one.
    ``settings``: what else the stored arrays depend on (the feature cache's model)."""
    atomic_write_text(root / MANIFEST, json.dumps({"num_frames": num_frames, "image_size": image_size, **settings,
                                                  "videos": videos}))


def save_array(out: Path, video_id: str, array: np.ndarray) -> str:
    """Write one video's array atomically under its safe name; returns the name."""
    name = file_name(video_id)
    with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return name


class StoredClips:
    """A folder of per-video arrays with a manifest, checked against the run: the common part of the
    frame cache (decoded frames) and the feature cache (image-tower outputs). ``load(video_id, info)``
    -> (one clip's array, its frame mask)."""

    kind, key = "clip store", ""


    def __init__(self, root: str | os.PathLike, num_frames: int, image_size: int, rebuild: str) -> None:
        self.root, self.num_frames, self.image_size = Path(root).expanduser(), num_frames, image_size
        self.rebuild = rebuild
        if not (self.root / MANIFEST).is_file():
            raise FrameCacheError(f"data.{self.key}={self.root} holds no {MANIFEST}; build it with: {rebuild}")
        self.manifest = read_manifest(self.root)
        for key, value in (("num_frames", num_frames), ("image_size", image_size)):
            if self.manifest[key] != value:
                raise FrameCacheError(f"{self.kind} {self.root} was made with {key}={self.manifest[key]}, the run "
                                      f"has data.{key}={value}; rebuild it (another output folder) with: {rebuild}")
        self.videos: dict[str, dict] = self.manifest["videos"]

    def check_rows(self, rows: datasets.Dataset) -> None:
        """Every video of these rows must be cached, with the rows' ``max_seconds`` window."""
        ids = rows["video_id"]
        seconds = rows["max_seconds"] if "max_seconds" in rows.column_names else [None] * len(ids)
        missing = [v for v in dict.fromkeys(ids) if not self._has(v)]
        if missing:
            raise FrameCacheError(f"{self.kind} {self.root} lacks {len(missing)} videos of the run, e.g. "
                                  f"{', '.join(missing[:5])}; complete it with: {self.rebuild}")
        other = list(dict.fromkeys(v for v, s in zip(ids, seconds) if self.videos[v]["max_seconds"] != s))
        if other:
            raise FrameCacheError(f"{self.kind} {self.root} holds {len(other)} videos with another max_seconds "
                                  f"window than the run's, e.g. {', '.join(other[:5])}; rebuild it with: "
                                  f"{self.rebuild}")

    def _has(self, video_id: str) -> bool:
        return video_id in self.videos and (self.root / self.videos[video_id]["file"]).is_file()

    def load(self, video_id: str, info: VideoInfo) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class FrameCache(StoredClips):
    """Stored decoded frames (``scripts/cache_frames.py``)."""

    kind, key = "frame cache", "frame_cache"

    def load(self, video_id: str, info: VideoInfo) -> tuple[torch.Tensor, torch.Tensor]:
        """(num_frames, 3, S, S) clip and (num_frames,) mask, exactly as ``load_clip`` makes them."""
        raw = np.load(self.root / self.videos[video_id]["file"])  # (t, h, w, 3) uint8
        return frames_to_clip(raw, info, self.num_frames, self.image_size)


def split_items(split) -> list[CacheItem]:
    """One item per row of a VideoDataset: its video's file, probe info and first-seconds window."""
    ids = split.rows["video_id"]
    seconds = split.rows["max_seconds"] if "max_seconds" in split.rows.column_names else [None] * len(ids)
    return [CacheItem(v, split.path_of(v), split.infos[split.path_of(v)], s) for v, s in zip(ids, seconds)]


def open_frame_cache(cfg: dict, task: str) -> FrameCache:
    return FrameCache(cfg["frame_cache"], cfg["num_frames"], cfg["image_size"], rebuild_command(cfg, task))


def _done(out: Path, entry: dict | None, item: CacheItem) -> bool:
    return entry is not None and entry["max_seconds"] == item.max_seconds and (out / entry["file"]).is_file()


def build_frame_cache(out: Path, items: Sequence[CacheItem], num_frames: int, image_size: int, decoder: DecoderSpec,
                      workers: int = 4, show_progress: bool = True) -> tuple[int, dict[str, str]]:
    """Cache every item not cached yet (resumable): each video's segment-centre frames, decoded in ``workers``
    isolated decoders and written atomically. Returns (videos written, reason per video that failed)."""
    out.mkdir(parents=True, exist_ok=True)
    videos: dict[str, dict] = {}
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        if (manifest["num_frames"], manifest["image_size"]) != (num_frames, image_size):
            raise FrameCacheError(f"{out} holds frames for num_frames={manifest['num_frames']}, image_size="
                                  f"{manifest['image_size']}; use another --out for other settings")
        videos = manifest["videos"]
    todo = [item for item in items if not _done(out, videos.get(item.video_id), item)]
    bad: dict[str, str] = {}
    calls = [frame_request(i.path, i.info, num_frames, image_size, max_seconds=i.max_seconds) for i in todo]
    for n, (k, raw) in enumerate(iter_decoded("read_frames", calls, decoder, workers, show_progress,
                                              "caching frames"), 1):
        item = todo[k]
        if isinstance(raw, str):  # the reason it failed
            bad[item.video_id] = raw
        else:  # (t, h, w, 3) uint8
            name = save_array(out, item.video_id, raw)
            videos[item.video_id] = {"file": name, "frames": int(raw.shape[0]), "max_seconds": item.max_seconds}
        if n % SAVE_EVERY == 0:
            write_manifest(out, num_frames, image_size, videos)
    write_manifest(out, num_frames, image_size, videos)
    return len(todo) - len(bad), bad
