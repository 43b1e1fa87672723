"""The loader section of scripts/bench_gpu.py: clips/s of the training DataLoader (``train_loader`` over a
``VideoTextDataset``, each worker decoding in its isolated decoder process, as training runs it) from generated
H.264 clips and from a frame cache of them, with each number of workers, beside what the step consumes.

The clips are bench_video.py's (real H.264 files from the synthetic generator, made once under $EMCL_CACHE),
each listed several times so that every worker has batches to make. Workers start one after another, so the
first round of batches (one per worker) is not timed: the rate is the steady state after it.
"""
from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from bench_video import DECODER, bench_files

from multitask.data.frame_cache import CacheItem, FrameCache, StoredClips, build_frame_cache
from multitask.data.video_text import Loading, VideoTextDataset
from multitask.training import train_loader
from multitask.types import TaskData

if TYPE_CHECKING:
    from bench_gpu import Plan


def draws(workers: int) -> tuple[int, int]:
    """(batches drawn, of which the first ``skip`` are not timed: each worker's first batch carries its start-up)."""
    skip = max(1, workers)
    return skip + 2 * max(2, workers), skip


def clip_dataset(items: list[CacheItem], copies: int, spec: dict, stored: StoredClips | None) -> VideoTextDataset:
    """Training items over the clips, each clip ``copies`` times, at the spec's frames and image size."""
    ids = [item.video_id for item in items] * copies
    rows = datasets.Dataset.from_dict({"video_id": ids, "captions": [["a clip"]] * len(ids)})
    paths = {item.video_id: item.path for item in items}
    return VideoTextDataset(rows, paths.__getitem__, {item.path: item.info for item in items}, spec["num_frames"],
                            spec["image_size"], train=True, loading=Loading(DECODER, "error"), stored=stored)


def loader_rate(dataset: VideoTextDataset, workers: int, batch_size: int) -> float:
    """Steady-state clips/s of the training loader with ``workers`` worker processes (0: in the main process)."""
    total, skip = draws(workers)
    loader = train_loader(TaskData(dataset, None), {"batch_size": batch_size, "num_workers": workers}, seed=0, world=1)
    clips, start = 0, 0.0
    for i, batch in enumerate(itertools.islice(loader, total)):
        if i == skip - 1:
            start = time.perf_counter()
        elif i >= skip:
            clips += len(batch["video"])
    return clips / (time.perf_counter() - start)


def loader_section(plan: Plan, demand: dict | None) -> dict:
    """Rows of (source, workers, clips/s, share of the step's demand); ``demand``: the fastest retrieval step's
    row of the steps section, or None."""
    spec = plan.loader
    items = bench_files(spec["clips"], spec["size"], spec["frames"], fps=24)
    copies = -(-draws(max(plan.workers))[0] * spec["batch"] // len(items))  # enough rows for the most workers
    need = demand["clips_per_s"] if demand else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_frame_cache(Path(tmp), items, spec["num_frames"], spec["image_size"], DECODER,
                          workers=max(1, *plan.workers), show_progress=False)
        cache = FrameCache(tmp, spec["num_frames"], spec["image_size"], rebuild="(built by scripts/bench_gpu.py)")
        for source, stored in (("videos", None), ("frame cache", cache)):
            dataset = clip_dataset(items, copies, spec, stored)
            for workers in plan.workers:
                rate = loader_rate(dataset, workers, spec["batch"])
                rows.append({"source": source, "workers": workers, "clips_per_s": rate,
                             "of_demand": rate / need if need else None})
    keys = ("task", "precision", "batch", "chunks", "clips_per_s")
    return {"clips": spec, "rows": rows, "demand": {k: demand[k] for k in keys} if demand else None}
