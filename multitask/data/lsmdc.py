"""LSMDC (Large Scale Movie Description Challenge) retrieval, the 1,000-clip public test.

- ``LSMDC16_annos_training.csv`` (train), ``LSMDC16_challenge_1000_publictect.csv`` (test): tab-separated,
  no header, exactly 6 fields (clip id, aligned start, aligned end, extracted start, extracted end,
  sentence) despite the ``.csv`` name; training repeats clip ids with other sentences;
- videos ``<movie>/<clip_id>.avi`` under ``data.video_root``; clip ids contain dots, so a file's id is
  its name without the last extension only.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import datasets

from multitask.data.tables import AnnotationError, cached_table

FILES = {"train": "LSMDC16_annos_training.csv", "test": "LSMDC16_challenge_1000_publictect.csv"}
NUM_FIELDS = 6


def read_annotations(path: Path) -> list[tuple[str, str]]:
    """(clip id, sentence) per line, in file order."""
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != NUM_FIELDS:
            raise AnnotationError(f"{path} line {number}: {len(fields)} tab-separated fields, expected {NUM_FIELDS} "
                                  "(clip id, 4 timestamps, sentence)")
        clip, sentence = fields[0].strip(), fields[5].strip()
        if not clip or not sentence:
            raise AnnotationError(f"{path} line {number}: empty {'clip id' if not clip else 'sentence'}")
        pairs.append((clip, sentence))
    return pairs


def _rows(path: Path) -> list[dict]:
    captions: dict[str, list[str]] = defaultdict(list)
    for clip, sentence in read_annotations(path):
        captions[clip].append(sentence)
    return [{"video_id": clip, "captions": sentences} for clip, sentences in captions.items()]


def retrieval_tables(root: Path, cfg: dict) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) rows ``{"video_id", "captions"}``; a test clip has one sentence."""
    return tuple(cached_table(root, f"lsmdc-{split}", [root / FILES[split]], lambda s=split: _rows(root / FILES[s]))
                 for split in ("train", "test"))
