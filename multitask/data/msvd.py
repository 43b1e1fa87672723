"""MSVD retrieval with every caption a query (multi-caption evaluation, docs/architecture.md, "Evaluation").

- ``{train,val,test}_list.txt``: one video id per line (ids contain ``_`` and ``-``);
- ``raw-captions.pkl``: a pickle of ``{video_id: [[word, ...], ...]}``, read with an unpickler that
  allows no globals at all (a downloaded pickle could otherwise run code);
- videos ``<id>.avi`` under ``data.video_root``.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import datasets

from multitask.data.tables import AnnotationError, cached_table

CAPTIONS_FILE = "raw-captions.pkl"
LISTS = {"train": "train_list.txt", "test": "test_list.txt"}


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise AnnotationError(f"{CAPTIONS_FILE} refers to {module}.{name}: only plain dicts, lists and strings are "
                              "allowed (refusing to run code from a data file)")


def read_captions(path: Path) -> dict[str, list[str]]:
    """video id -> captions, each a space-joined word list."""
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        data = _NoGlobals(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError) as err:
        raise AnnotationError(f"{path}: not a readable pickle ({err})") from err
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a dict of video id -> captions, got {type(data).__name__}")
    out = {}
    for video_id, captions in data.items():
        if not isinstance(captions, list) or not captions:
            raise AnnotationError(f"{path} [{video_id}]: expected a non-empty list of captions")
        out[str(video_id)] = [" ".join(c) if isinstance(c, list) else str(c) for c in captions]
    return out


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _rows(root: Path, split: str) -> list[dict]:
    captions = read_captions(root / CAPTIONS_FILE)
    ids = read_list(root / LISTS[split])
    missing = [v for v in ids if v not in captions]
    if missing:
        raise AnnotationError(f"{root / CAPTIONS_FILE}: no captions for {len(missing)} ids of {LISTS[split]}, "
                              f"e.g. {', '.join(missing[:5])}")
    return [{"video_id": v, "captions": captions[v]} for v in ids]


def retrieval_tables(root: Path, cfg: dict) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) rows ``{"video_id", "captions"}`` with all captions of each video."""
    return tuple(cached_table(root, f"msvd-{split}", [root / LISTS[split], root / CAPTIONS_FILE],
                              lambda s=split: _rows(root, s)) for split in ("train", "test"))
