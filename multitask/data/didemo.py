"""DiDeMo for paragraph-to-video retrieval over the first 30 seconds of each video.

- ``{train,val,test}_list.txt``: the original Flickr file names (mixed extensions, some ending in a
  bare ``.``), one per line;
- ``{train,val,test}_data.json``: lists of ``{"video", "description", "times", ...}``;
- videos as the official download writes them, ``<video>.mp4`` under ``data.video_root`` (so the id,
  the file name without its last extension, is the list entry).

A video's descriptions, in file order, are joined into one paragraph; the clip is its first 30 s
(DiDeMo moments are 5-second chunks of at most the first 30 s).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import datasets

from multitask.data.msvd import read_list
from multitask.data.tables import AnnotationError, cached_table, listed_rows, read_json, require_fields

SPLITS = {"train": ("train_list.txt", "train_data.json"), "test": ("test_list.txt", "test_data.json")}
MAX_SECONDS = 30.0


def _rows(root: Path, split: str) -> list[dict]:
    list_file, data_file = (root / name for name in SPLITS[split])
    records = read_json(data_file)
    if not isinstance(records, list):
        raise AnnotationError(f"{data_file}: expected a list of annotations")
    descriptions: dict[str, list[str]] = defaultdict(list)
    for i, record in enumerate(records):
        record = require_fields(record, ("video", "description"), f"{data_file} [{i}]")
        if str(record["description"]).strip():
            descriptions[str(record["video"])].append(str(record["description"]).strip())
    def row(video: str) -> dict | None:
        if not descriptions.get(video):
            return None
        return {"video_id": video, "captions": [" ".join(descriptions[video])], "max_seconds": MAX_SECONDS}

    return listed_rows(read_list(list_file), row, list_file, data_file)

def retrieval_tables(root: Path, cfg: dict) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) rows ``{"video_id", "captions": [paragraph], "max_seconds": 30}``."""
    return tuple(cached_table(root, f"didemo-{split}", [root / name for name in SPLITS[split]],
                              lambda s=split: _rows(root, s)) for split in ("train", "test"))
