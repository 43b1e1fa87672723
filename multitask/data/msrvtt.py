"""MSR-VTT retrieval annotations in the public layout (docs/architecture.md, "Data").

- ``MSRVTT_data.json``: ``sentences`` (video_id, caption, sen_id) and ``videos`` (video_id, split);
- ``MSRVTT_train.9k.csv`` / ``MSRVTT_train.7k.csv``: column ``video_id``, the training videos;
- ``MSRVTT_JSFUSION_test.csv``: ``key,vid_key,video_id,sentence``, the 1k-A test (one caption a clip);
- videos at ``{root}/videos/all/{video_id}.mp4`` (or ``{root}/videos/{video_id}.mp4``).

Captioning uses the standard split by the ``split`` field of ``videos`` (6513 train / 497 validate /
2990 test), with every caption of a video as a reference.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import datasets

from multitask.data.tables import AnnotationError, cached_table, read_csv, read_json, require_fields
from multitask.errors import ConfigError

TRAIN_LISTS = {"9k": "MSRVTT_train.9k.csv", "7k": "MSRVTT_train.7k.csv"}
TEST_FILE = "MSRVTT_JSFUSION_test.csv"
DATA_FILE = "MSRVTT_data.json"


def video_dir(root: Path) -> Path:
    """``{root}/videos/all`` (the release layout), or ``{root}/videos`` when only that folder exists."""
    release, flat = root / "videos" / "all", root / "videos"
    return flat if not release.is_dir() and flat.is_dir() else release


def video_file(folder: Path, video_id: str) -> str:
    return str(folder / f"{video_id}.mp4")


def read_sentences(root: Path) -> dict[str, list[str]]:
    """video_id -> its captions, in file order; empty captions are an error."""
    path = root / DATA_FILE
    data = read_json(path)
    if not isinstance(data, dict) or "sentences" not in data:
        raise AnnotationError(f"{path}: missing field 'sentences'")
    captions: dict[str, list[str]] = defaultdict(list)
    for i, record in enumerate(data["sentences"]):
        record = require_fields(record, ("video_id", "caption"), f"{path} sentences[{i}]")
        caption = str(record["caption"]).strip()
        if not caption:
            raise AnnotationError(f"{path} sentences[{i}] (video {record['video_id']}): empty 'caption'")
        captions[str(record["video_id"])].append(caption)
    return captions


def _train_rows(root: Path, list_file: str) -> list[dict]:
    ids = [row["video_id"].strip() for row in read_csv(root / list_file, ["video_id"])]
    captions = read_sentences(root)
    missing = [v for v in ids if v not in captions]
    if missing:
        raise AnnotationError(f"{root / DATA_FILE}: no 'sentences' for {len(missing)} training videos of "
                              f"{list_file}, e.g. {', '.join(missing[:5])}")
    return [{"video_id": v, "captions": captions[v]} for v in ids]


def _test_rows(root: Path) -> list[dict]:
    rows = read_csv(root / TEST_FILE, ["video_id", "sentence"])
    for i, row in enumerate(rows):
        if not row["sentence"].strip():
            raise AnnotationError(f"{root / TEST_FILE} row {i + 2} (video {row['video_id']}): empty 'sentence'")
    return [{"video_id": r["video_id"].strip(), "captions": [r["sentence"].strip()]} for r in rows]


def retrieval_tables(root: Path, train_list: str = "9k") -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train rows, 1k-A test rows), each row ``{"video_id": str, "captions": list[str]}``."""
    if train_list not in TRAIN_LISTS:
        raise ConfigError(f"unknown data.train_list {train_list!r}; known: {', '.join(TRAIN_LISTS)}")
    list_file = TRAIN_LISTS[train_list]
    train = cached_table(root, f"msrvtt-train-{train_list}", [root / list_file, root / DATA_FILE],
                         lambda: _train_rows(root, list_file))
    test = cached_table(root, "msrvtt-test-1ka", [root / TEST_FILE], lambda: _test_rows(root))
    return train, test


def _split_rows(root: Path, split: str) -> list[dict]:
    path = root / DATA_FILE
    data = read_json(path)
    if not isinstance(data, dict) or "videos" not in data:
        raise AnnotationError(f"{path}: missing field 'videos'")
    captions = read_sentences(root)
    rows = []
    for i, record in enumerate(data["videos"]):
        record = require_fields(record, ("video_id", "split"), f"{path} videos[{i}]")
        if record["split"] != split:
            continue
        video_id = str(record["video_id"])
        if video_id not in captions:
            raise AnnotationError(f"{path}: video {video_id} ({split} split) has no 'sentences'")
        rows.append({"video_id": video_id, "captions": captions[video_id]})
    return rows


def caption_tables(root: Path) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) rows of the standard captioning split, ``{"video_id", "captions"}``."""
    tables = [cached_table(root, f"msrvtt-caption-{split}", [root / DATA_FILE], lambda s=split: _split_rows(root, s))
              for split in ("train", "test")]
    return tables[0], tables[1]
