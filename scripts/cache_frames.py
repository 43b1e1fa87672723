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
import logging
from pathlib import Path

from multitask.data.frame_cache import CacheItem, build_frame_cache, split_items
from multitask.data.registry import TABLES, build_data
from multitask.data.script_args import add_data_arguments, data_config
from multitask.decoding import DecoderSpec

DEFAULT_TASK = {"msrvtt_qa": "qa"}  # data name -> task when --task is not given; otherwise retrieval


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--task", nargs="+", choices=sorted({t for tasks in TABLES.values() for t in tasks}),
                        help="whose videos to cache (default: retrieval; qa for msrvtt_qa)")
    parser.add_argument("--out", type=Path, required=True, help="cache folder (data.frame_cache)")
    parser.add_argument("--num-frames", type=int, required=True, help="data.num_frames of the runs")
    parser.add_argument("--image-size", type=int, required=True, help="data.image_size of the runs")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()
    cfg = data_config(args, f"data.num_frames={args.num_frames}", f"data.image_size={args.image_size}")
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
