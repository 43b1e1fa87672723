"""Video loading benchmark: clips per second of three ways to make the same (num_frames, 3, S, S) clips.

- decode-all: decord decodes every frame of the file at full resolution, then the sampled frames are
  resized, cropped and normalised (what naive code does);
- loader: the project's ``load_clip``, decoding only the sampled frames, at the reduced size, in an isolated
  decoder process (``multitask.decoding``: a time limit and crash isolation per video), as training does;
- loader, in process: the same decoding in the calling process (what isolation costs);
- frame cache: ``np.load`` of the stored uint8 frames plus the same crop and normalisation
  (``data.frame_cache``, built here with ``build_frame_cache``; its clips must equal the loader's).

Files: real H.264 .mp4s from the synthetic generator, 240 x 240 px, 300 frames at 24 fps (12.5 s: about
an MSR-VTT clip's length and pixel count, though simpler content), generated once under $EMCL_CACHE.
One thread; every round times each method over all clips (order rotated), medians over rounds.
Headlines: loader_vs_decode_all (loader clips/s over decode-all clips/s), cache_vs_decode (frame cache
clips/s over loader clips/s) and isolation_cost (in-process clips/s over isolated loader clips/s).

    python scripts/bench_video.py --quick --json /tmp/bench_video.json
    python scripts/bench_video.py --clips 16 --rounds 7 --num-frames 12 --image-size 224
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import decord
import torch

from multitask.data.frame_cache import CacheItem, FrameCache, build_frame_cache
from multitask.data.synthetic import generate_synthetic
from multitask.decoding import DecoderSpec, process_decoder
from multitask.video import frames_to_clip, load_clip, sample_indices, usable_frames
from multitask.video_io import VideoInfo, probe_video

Clip = tuple[torch.Tensor, torch.Tensor]  # (T, 3, S, S) frames, (T,) mask
DECODER = DecoderSpec("multitask.video_io", 60.0)
Loader = Callable[[CacheItem], Clip]


def bench_files(num_clips: int, size: int, frames: int, fps: int) -> list[CacheItem]:
    """The generated .mp4 files (made once per setting under $EMCL_CACHE) with their probe info."""
    cache = Path(os.environ.get("EMCL_CACHE", Path.home() / ".cache" / "emcl-multitask"))
    root = generate_synthetic(cache / f"bench-video-{size}px-{frames}f-{num_clips}", seed=0, num_train=num_clips,
                              num_val=0, num_test=0, num_retrieval_test=0, size=size, min_frames=frames,
                              max_frames=frames, fps=fps)
    paths = [str(root / "videos" / "all" / f"video{i}.mp4") for i in range(num_clips)]
    infos = [probe_video(path) for path in paths]
    assert all(isinstance(info, VideoInfo) for info in infos), infos
    return [CacheItem(f"video{i}", path, info) for i, (path, info) in enumerate(zip(paths, infos))]


def decode_all_clip(item: CacheItem, num_frames: int, image_size: int) -> Clip:
    """Every frame decoded at full size, then the sampled ones resized (bilinear, antialiased) and normalised."""
    reader = decord.VideoReader(item.path, num_threads=1)
    every = reader.get_batch(list(range(len(reader)))).asnumpy()  # (n, H, W, 3) uint8
    idx = sample_indices(usable_frames(item.info, len(every), item.max_seconds), num_frames)
    return frames_to_clip(every[idx], item.info, num_frames, image_size)  # resized: the frames are full size


def clips_per_second(load: Loader, items: list[CacheItem], min_seconds: float) -> float:
    """Passes over all clips until ``min_seconds`` have gone by (fast methods get several passes)."""
    done, start = 0, time.perf_counter()
    while True:
        for item in items:
            load(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def run_rounds(methods: dict[str, Loader], items: list[CacheItem], rounds: int, min_seconds: float) -> dict:
    """Median clips/s per method; the methods are interleaved, their order rotated every round."""
    names = list(methods)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rates[name].append(clips_per_second(methods[name], items, min_seconds))
    return {name: statistics.median(values) for name, values in rates.items()}


def check_cache(cache: FrameCache, items: list[CacheItem], num_frames: int, image_size: int) -> None:
    for item in items:
        cached, uncached = cache.load(item.video_id, item.info), load_clip(item.path, item.info, num_frames, image_size)
        if not (torch.equal(cached[0], uncached[0]) and torch.equal(cached[1], uncached[1])):
            raise SystemExit(f"frame cache differs from load_clip for {item.path}")


def report(rates: dict[str, float], args: argparse.Namespace, wall: float) -> dict:
    base = rates["decode-all"]
    print(f"{args.clips} clips of {args.frames} frames, {args.size} x {args.size} px -> {args.num_frames} frames "
          f"at {args.image_size} px; 1 thread, median of {args.rounds} rounds")
    print(f"{'method':<18}  {'clips/s':>9}  {'vs decode-all':>13}")
    for name, rate in rates.items():
        print(f"{name:<18}  {rate:>9.1f}  {rate / base:>12.1f}x")
    result = {"loader_vs_decode_all": rates["loader"] / base, "cache_vs_decode": rates["frame cache"] / rates["loader"],
              "isolation_cost": rates["loader, in process"] / rates["loader"], "clips_per_second": rates,
              "seconds": wall,
              "settings": {k: getattr(args, k) for k in ("clips", "rounds", "frames", "size", "num_frames",
                                                         "image_size")}}
    print(f"loader_vs_decode_all = {result['loader_vs_decode_all']:.1f}x, "
          f"cache_vs_decode = {result['cache_vs_decode']:.1f}x, isolation_cost = {result['isolation_cost']:.2f}x "
          f"({wall:.0f} s)")
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 clips, 5 rounds (well under a minute)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--frames", type=int, default=300, help="frames per generated file")
    parser.add_argument("--size", type=int, default=240, help="generated frame size (square, even)")
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.rounds = 6, 5
    return args


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    torch.set_num_threads(1)
    items = bench_files(args.clips, args.size, args.frames, fps=24)
    with tempfile.TemporaryDirectory() as tmp:
        build_frame_cache(Path(tmp), items, args.num_frames, args.image_size, DECODER, workers=1, show_progress=False)
        cache = FrameCache(tmp, args.num_frames, args.image_size, rebuild="(built by this benchmark)")
        check_cache(cache, items, args.num_frames, args.image_size)
        methods: dict[str, Loader] = {
            "decode-all": lambda item: decode_all_clip(item, args.num_frames, args.image_size),
            "loader": lambda item: load_clip(item.path, item.info, args.num_frames, args.image_size,
                                             decoder=process_decoder(DECODER)),
            "loader, in process": lambda item: load_clip(item.path, item.info, args.num_frames, args.image_size),
            "frame cache": lambda item: cache.load(item.video_id, item.info)}
        rates = run_rounds(methods, items, args.rounds, min_seconds=0.3)
    result = report(rates, args, time.perf_counter() - start)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
