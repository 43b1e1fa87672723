"""ActivityNet Captions for paragraph-to-video retrieval (the "val1" protocol).

- ``train_ids.json`` / ``val_ids.json``: lists of ``v_<id>``, deciding the split;
- ``train.json`` / ``val_1.json``: ``{"v_<id>": {"duration", "timestamps", "sentences"}}``;
  sentences after the first start with spaces;
- videos ``v_<id>.<mp4|mkv|webm>`` anywhere under ``data.video_root``.

Each video's sentences are stripped and joined into one paragraph, matched against the whole clip.
Ids in a list without captions are reported and left out.
"""
from __future__ import annotations

import logging
from pathlib import Path

import datasets

from multitask.data.tables import AnnotationError, cached_table, read_json, require_fields

logger = logging.getLogger(__name__)

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
    rows, missing = [], []
    for video_id in dict.fromkeys(str(v) for v in ids):
        if video_id not in captions:
            missing.append(video_id)
            continue
        record = require_fields(captions[video_id], ("sentences",), f"{captions_file} [{video_id}]")
        rows.append({"video_id": video_id, "captions": [paragraph(record["sentences"], f"{captions_file} [{video_id}]")]})
    if missing:
        logger.warning("%s: %d of %d ids have no captions in %s and are left out, e.g. %s", ids_file.name,
                       len(missing), len(missing) + len(rows), captions_file.name, ", ".join(missing[:5]))
    return rows


def retrieval_tables(root: Path, cfg: dict) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) rows ``{"video_id", "captions": [paragraph]}``."""
    return tuple(cached_table(root, f"activitynet-{split}", [root / name for name in SPLITS[split]],
                              lambda s=split: _rows(root, s)) for split in ("train", "test"))
