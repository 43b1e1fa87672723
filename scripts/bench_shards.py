"""Streaming benchmark: training clips per second from tar shards (``data=shards``) and from the same clips as
files (the MSR-VTT-layout loader), with 0, 1 and 2 data loader workers, in one run.

The clips are a generated synthetic set (real H.264 .mp4s; 128 px and 48-96 frames by default), read as files
by ``VideoTextDataset`` and written as shards by ``multitask.data.shard_writer`` (100 clips each). Both
paths decode the same way (``load_clip`` in an isolated decoder process; from shards the bytes come from
memory, so each clip is also probed there, as files were probed once before training). Each cell times
``--batches`` batches after a first one that starts the workers; the headline is ``shards_vs_files`` per
worker count (shards clips/s over files clips/s).

    python scripts/bench_shards.py --quick --json /tmp/bench_shards.json
    python scripts/bench_shards.py --batches 20 --batch-size 32
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from multitask.data.registry import build_data
from multitask.data.shard_writer import write_shards
from multitask.data.shards import parse_shards
from multitask.data.stream import ClipSettings, ShardStream, Topology
from multitask.data.video_text import Loading
from multitask.decoding import DecoderSpec

WORKERS = (0, 1, 2)
DECODER = DecoderSpec("multitask.video_io", 60.0)


def data_config(root: Path, quick: bool, num_frames: int, image_size: int) -> dict:
    generator = dict(num_train=40, num_val=4, num_test=24, num_retrieval_test=16, size=64, min_frames=12,
                     max_frames=20) if quick else \
        dict(num_train=600, num_val=0, num_test=40, num_retrieval_test=20, size=128, min_frames=48, max_frames=96)
    return {"name": "synthetic", "root": str(root), "seed": 0, "layout": "msrvtt", "train_list": "9k",
            "generator": {**generator, "fps": 8, "distractor_prob": 0.25}, "num_frames": num_frames,
            "image_size": image_size, "on_bad_video": "error", "decoder": DECODER.module,
            "decode_timeout_s": DECODER.timeout_s, "augment": False}


def clips_per_second(loader: DataLoader, batches: int) -> float:
    """Clips/s over ``batches`` batches, after a first batch that starts the workers."""
    it = iter(loader)
    next(it)
    start, clips = time.perf_counter(), 0
    for _ in range(batches):
        clips += len(next(it)["text"])
    return clips / (time.perf_counter() - start)


def file_loader(train, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(train, batch_sampler=train.batch_sampler(batch_size, 0), num_workers=workers)


def shard_loader(pattern: str, cfg: dict, batch_size: int, workers: int) -> DataLoader:
    clip = ClipSettings(cfg["num_frames"], cfg["image_size"], False, None, Loading(DECODER, "skip"))
    stream = ShardStream(parse_shards(pattern), 0, 100, clip)
    stream.configure(batch_size, Topology(0, 1, workers), {})
    return stream.loader()


def measure(args: argparse.Namespace, tmp: Path) -> dict:
    cfg = data_config(tmp / "data", args.quick, args.num_frames, args.image_size)
    train = build_data("retrieval", cfg, show_progress=not args.json).train
    pattern = write_shards(train, tmp / "shards", args.samples_per_shard, show_progress=False)
    if len(train) < (args.batches + 1) * args.batch_size:
        raise SystemExit(f"{len(train)} clips are fewer than ({args.batches} + 1) x {args.batch_size}")
    rates: dict[str, dict[int, float]] = {"files": {}, "shards": {}}
    for workers in WORKERS:
        rates["files"][workers] = clips_per_second(file_loader(train, args.batch_size, workers), args.batches)
        rates["shards"][workers] = clips_per_second(shard_loader(pattern, cfg, args.batch_size, workers),
                                                    args.batches)
    return {"clips_per_second": rates,
            "shards_vs_files": {w: rates["shards"][w] / rates["files"][w] for w in WORKERS},
            "settings": {"clips": len(train), **{k: getattr(args, k) for k in
                                                 ("batches", "batch_size", "num_frames", "image_size",
                                                  "samples_per_shard")}}}


def print_table(result: dict) -> None:
    rates = result["clips_per_second"]
    print(f"{'workers':>7}  {'files clips/s':>13}  {'shards clips/s':>14}  {'shards/files':>12}")
    for w in WORKERS:
        ratio = result["shards_vs_files"][w]
        print(f"{w:>7}  {rates['files'][w]:>13.1f}  {rates['shards'][w]:>14.1f}  {ratio:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="52 small clips, batches of 4 (seconds)")
    parser.add_argument("--batches", type=int, default=15, help="timed batches per cell")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--samples-per-shard", type=int, default=100)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.batch_size, args.num_frames, args.image_size, args.samples_per_shard = 6, 4, 8, 64, 7
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    result["seconds"] = time.perf_counter() - start
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
