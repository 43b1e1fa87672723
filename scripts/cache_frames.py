"""Decode every training and test video of a dataset once and store its sampled, resized frames as uint8
arrays (multitask/data/frame_cache.py); runs then read them with ``data.frame_cache=OUT``.

    python scripts/cache_frames.py --data msrvtt --root /data/msrvtt --out /data/msrvtt-frames \\
        --num-frames 12 --image-size 224
    python scripts/cache_frames.py --data didemo --root /data/didemo --out /data/didemo-frames \\
        --num-frames 64 --image-size 224
    python scripts/cache_frames.py --data msrvtt --task retrieval caption qa ...  # every video of task=multi
    python scripts/cache_frames.py --data synthetic --seed 0 --out /tmp/frames --num-frames 8 --image-size 64

--num-frames and --image-size must be the run's data.num_frames and data.image_size. Resumable: videos
already in OUT are skipped. Bad videos (missing, empty, undecodable) are reported and left out.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from multitask.data.frame_cache import CacheItem, build_frame_cache, split_items
from multitask.data.registry import DATA, TABLES, build_data
from multitask.decoding import DecoderSpec
from multitask.engine import compose_config

DEFAULT_TASK = {"msrvtt_qa": "qa"}  # data name -> task when --task is not given; otherwise retrieval


def synthetic_root(layout: str, seed: int) -> Path:
    """The root configs/data/synthetic.yaml gives the generated set."""
    cache = Path(os.environ.get("EMCL_CACHE", Path.home() / ".cache" / "emcl-multitask"))
    return cache / f"synthetic-{layout}-seed{seed}"


def data_config(args: argparse.Namespace) -> dict:
    """The plain data config build_data takes (bad videos skipped, so they are reported, not fatal)."""
    if args.root is None and args.data != "synthetic":
        raise SystemExit(f"--root is required for --data {args.data}")
    root = args.root if args.root is not None else synthetic_root(args.layout, args.seed)
    overrides = [f"data={args.data}", f"data.root={root}", f"data.seed={args.seed}", "data.on_bad_video=skip",
                 f"data.num_frames={args.num_frames}", f"data.image_size={args.image_size}"]
    cfg = compose_config(overrides)["data"]
    extra = {"video_root": str(args.video_root) if args.video_root else None} if "video_root" in cfg else {}
    synthetic = {"layout": args.layout, "generator": {**cfg["generator"], **args.generator}} \
        if args.data == "synthetic" else {}
    return {**cfg, **extra, **synthetic}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, choices=list(DATA), help="data.name")
    parser.add_argument("--task", nargs="+", choices=sorted({t for tasks in TABLES.values() for t in tasks}),
                        help="whose videos to cache (default: retrieval; qa for msrvtt_qa)")
    parser.add_argument("--root", type=Path, help="data.root (synthetic: default under $EMCL_CACHE)")
    parser.add_argument("--video-root", type=Path, help="data.video_root (ActivityNet, LSMDC, MSVD, DiDeMo)")
    parser.add_argument("--seed", type=int, default=0, help="data.seed (synthetic)")
    parser.add_argument("--layout", default="msrvtt", help="data.layout (synthetic)")
    parser.add_argument("--generator", type=json.loads, default={}, help="data.generator as JSON (synthetic)")
    parser.add_argument("--out", type=Path, required=True, help="cache folder (data.frame_cache)")
    parser.add_argument("--num-frames", type=int, required=True, help="data.num_frames of the runs")
    parser.add_argument("--image-size", type=int, required=True, help="data.image_size of the runs")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()
    cfg = data_config(args)
    items: dict[str, CacheItem] = {}
    bad: dict[str, str] = {}
    for task in args.task or [DEFAULT_TASK.get(args.data, "retrieval")]:
        data = build_data(task, cfg, show_progress=True)
        bad.update(data.skipped)
        for split in (data.train, data.test):
            for item in split_items(split):
                items.setdefault(item.video_id, item)
    written, failed = build_frame_cache(args.out, list(items.values()), args.num_frames, args.image_size,
                                        DecoderSpec(cfg["decoder"], cfg["decode_timeout_s"]), args.workers)
    bad.update(failed)
    print(f"{args.out}: {written} videos written, {len(items) - written - len(failed)} already cached, "
          f"{len(bad)} bad videos left out")
    for video, reason in list(bad.items())[:20]:
        print(f"  {video}: {reason}")
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more")


if __name__ == "__main__":
    main()
