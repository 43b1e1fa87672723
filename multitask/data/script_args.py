"""The dataset arguments the data scripts share (``scripts/cache_frames.py``, ``scripts/make_shards.py``): which
dataset, where, and the plain data config ``build_data`` takes for it."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from multitask.data.registry import DATA
from multitask.engine import compose_config


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, choices=[d for d in DATA if d != "shards"], help="data.name")
    parser.add_argument("--root", type=Path, help="data.root (synthetic: default under $EMCL_CACHE)")
    parser.add_argument("--video-root", type=Path, help="data.video_root (ActivityNet, LSMDC, MSVD, DiDeMo)")
    parser.add_argument("--seed", type=int, default=0, help="data.seed (synthetic)")
    parser.add_argument("--layout", default="msrvtt", help="data.layout (synthetic)")
    parser.add_argument("--generator", type=json.loads, default={}, help="data.generator as JSON (synthetic)")


def synthetic_root(layout: str, seed: int) -> Path:
    """The root configs/data/synthetic.yaml gives the generated set."""
    cache = Path(os.environ.get("EMCL_CACHE", Path.home() / ".cache" / "emcl-multitask"))
    return cache / f"synthetic-{layout}-seed{seed}"


def data_config(args: argparse.Namespace, *overrides: str) -> dict:
    """The plain data config build_data takes (bad videos skipped, so they are reported, not fatal)."""
    if args.root is None and args.data != "synthetic":
        raise SystemExit(f"--root is required for --data {args.data}")
    root = args.root if args.root is not None else synthetic_root(args.layout, args.seed)
    cfg = compose_config([f"data={args.data}", f"data.root={root}", f"data.seed={args.seed}",
                          "data.on_bad_video=skip", *overrides])["data"]
    extra = {"video_root": str(args.video_root) if args.video_root else None} if "video_root" in cfg else {}
    synthetic = {"layout": args.layout, "generator": {**cfg["generator"], **args.generator}} \
        if args.data == "synthetic" else {}
    return {**cfg, **extra, **synthetic}
