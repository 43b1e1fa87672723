"""Write a dataset's training split as tar shards in the video2dataset layout, for ``data=shards``.

    python scripts/make_shards.py --data msrvtt --root /data/msrvtt --out /data/msrvtt-shards --samples-per-shard 1000
    python scripts/make_shards.py --data msvd --root /data/msvd --out /data/msvd-shards --samples-per-shard 500
    python scripts/make_shards.py --data synthetic --seed 0 --out /tmp/shards --samples-per-shard 100

Each training video is one sample: ``{key}.mp4`` (the file's bytes as they are; another container keeps its own
extension, e.g. ``.avi``), ``{key}.txt`` (its first caption) and ``{key}.json`` (``video_id``, ``caption``,
``captions``: all of them). Train on every caption with ``data.caption_field=captions`` (one is drawn per
sample and epoch). Keys are the video ids with characters other than letters, digits, ``-`` and ``_`` replaced
(a dot would split the key, as tar readers take the name up to its first dot as the key). Shards are named
``00000.tar``, ``00001.tar``, ... with ``shards.json`` beside them (the sample count of each, and the
``data.shards`` pattern for them). Videos that are missing or undecodable are reported and left out.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import webdataset as wds
from tqdm.auto import tqdm

from multitask.data.registry import build_data
from multitask.data.script_args import add_data_arguments, data_config
from multitask.files import atomic_write_text

VIDEO_MEMBERS = {".mp4": "mp4", ".webm": "webm", ".mkv": "mkv", ".avi": "avi", ".mov": "mov"}


def sample_key(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", video_id)


def samples(data) -> list[dict]:
    """One sample description per training video: key, video id, captions and file."""
    train = data.train
    return [{"key": sample_key(row["video_id"]), "video_id": row["video_id"], "captions": list(row["captions"]),
             "path": Path(train.path_of(row["video_id"]))} for row in train.rows]


def encode(sample: dict) -> dict:
    member = VIDEO_MEMBERS.get(sample["path"].suffix.lower(), "mp4")
    meta = {"video_id": sample["video_id"], "caption": sample["captions"][0], "captions": sample["captions"]}
    return {"__key__": sample["key"], member: sample["path"].read_bytes(), "txt": sample["captions"][0].encode(),
            "json": json.dumps(meta).encode()}


def write_shards(items: list[dict], out: Path, per_shard: int) -> list[int]:
    """The samples into ``out/%05d.tar`` (``per_shard`` each, reproducible bytes); the count of each shard."""
    out.mkdir(parents=True, exist_ok=True)
    counts: list[int] = []
    with wds.ShardWriter(str(out / "%05d.tar"), maxcount=per_shard, verbose=0, encoder=False, mtime=0) as sink:
        for k, sample in enumerate(tqdm(items, desc="writing shards")):
            if k % per_shard == 0:
                counts.append(0)
            sink.write(encode(sample))
            counts[-1] += 1
    return counts


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder for the shards")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="samples in each shard")
    args = parser.parse_args()
    if args.samples_per_shard < 1:
        raise SystemExit("--samples-per-shard must be at least 1")
    data = build_data("retrieval", data_config(args), show_progress=True)
    items = samples(data)
    keys = [s["key"] for s in items]
    if len(set(keys)) < len(keys):
        raise SystemExit("two video ids map to the same shard key; rename the videos")
    counts = write_shards(items, args.out, args.samples_per_shard)
    last = len(counts) - 1
    pattern = str(args.out / (f"{{00000..{last:05d}}}.tar" if last else "00000.tar"))
    atomic_write_text(args.out / "shards.json", json.dumps({"pattern": pattern, "samples": sum(counts),
                                                            "shards": counts}, indent=2))
    print(f"{args.out}: {sum(counts)} samples in {len(counts)} shards; train with data=shards data.shards='{pattern}'")
    for video, reason in list(data.skipped.items())[:20]:
        print(f"  left out {video}: {reason}")


if __name__ == "__main__":
    main()
