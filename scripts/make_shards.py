"""Write a dataset's training split as tar shards in the video2dataset layout, for ``data=shards``.

    python scripts/make_shards.py --data msrvtt --root /data/msrvtt --out /data/msrvtt-shards --samples-per-shard 1000
    python scripts/make_shards.py --data msvd --root /data/msvd --out /data/msvd-shards --samples-per-shard 500
    python scripts/make_shards.py --data synthetic --seed 0 --out /tmp/shards --samples-per-shard 100

Each training video is one sample: ``{key}.mp4`` (the file's bytes), ``{key}.txt`` (its first caption) and
``{key}.json`` (``video_id``, ``caption``, ``captions``); train on every caption with
``data.caption_field=captions``. Shards are ``00000.tar``, ``00001.tar``, ... with ``shards.json`` beside them
(the sample count of each and the ``data.shards`` pattern). Missing or undecodable videos are reported and left
out (multitask/data/shard_writer.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from multitask.data.registry import build_data
from multitask.data.script_args import add_data_arguments, data_config
from multitask.data.shard_writer import write_shards
from multitask.errors import UserError


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder for the shards")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="samples in each shard")
    args = parser.parse_args()
    try:
        data = build_data("retrieval", data_config(args), show_progress=True)
        pattern = write_shards(data.train, args.out, args.samples_per_shard)
    except UserError as err:  # one line and exit code 2, as train.py and the multitask command
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.out}: {len(data.train)} samples; train with data=shards data.shards='{pattern}'")
    for video, reason in list(data.skipped.items())[:20]:
        print(f"  left out {video}: {reason}")
    if len(data.skipped) > 20:
        print(f"  ... and {len(data.skipped) - 20} more")


if __name__ == "__main__":
    main()
