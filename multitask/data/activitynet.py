"""ActivityNet Captions for paragraph-to-video retrieval (the "val1" protocol).

- ``train_ids.json`` / ``val_ids.json``: lists of ``v_<id>``, deciding the split;
- ``train.json`` / ``val_1.json``: ``{"v_<id>": {"duration", "timestamps", "sentences"}}``;
  sentences after the first start with spaces;
- videos ``v_<id>.<mp4|mkv|webm>`` anywhere under ``data.video_root``.

Each video's sentences are stripped and joined into one paragraph, matched against the whole clip.
Ids in a list without captions are reported and left out.
"""
from __future__ import annotations

from pathlib import Path

import datasets

from multitask.data.tables import AnnotationError, cached_table, listed_rows, read_json, require_fields

SPLITS = {"train": ("train_ids.json", "train.json"), "test": ("val_ids.json", "val_1.json")}


def paragraph(sentences: list, where: str) -> str:
    text = " ".join(str(s).strip() for s in sentences if str(s).strip())
    if not text:
        raise AnnotationError(f"{where}: no non-empty sentence")
    return text


def _rows(root: Path, split: str) -> list[dict]:
    ids_file, captions_file = (root / name for name in SPLITS[split])
    ids, captions = read_json(ids_file), read_json(captions_file)
    if not isinstance(ids, list) or not isinstance(captions, dict):
        raise AnnotationError(f"{ids_file} must hold a list of ids and {captions_file} an object of id -> record")
    def row(video_id: str) -> dict | None:
        if video_id not in captions:
            return None
        where = f"{captions_file} [{video_id}]"
        record = require_fields(captions[video_id], ("sentences",), where)
        return {"video_id": video_id, "captions": [paragraph(record["sentences"], where)]}

    return listed_rows((str(v) for v in ids), row, ids_file, captions_file)

def retrieval_tables(root: Path, cfg: dict) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) rows ``{"video_id", "captions": [paragraph]}``."""
    return tuple(cached_table(root, f"activitynet-{split}", [root / name for name in SPLITS[split]],
                              lambda s=split: _rows(root, s)) for split in ("train", "test"))
