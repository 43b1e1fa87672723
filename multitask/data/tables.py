"""Annotation parsing with clear errors, cached as memory-mapped HF ``datasets`` tables.

Parsed annotations live in Arrow files beside the data (or in ~/.cache when the data folder is
read-only), so every data-loader worker and every rank maps one copy instead of holding Python
lists of records.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import datasets

from multitask.errors import DataError
from multitask.files import atomic_path

logger = logging.getLogger(__name__)


class AnnotationError(DataError):
    """A malformed annotation file; the message names the file and the field."""


def read_json(path: Path) -> object:
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from err


def read_csv(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    """Rows of a CSV with a header; every column in ``required`` must be present."""
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise AnnotationError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        return [dict(row) for row in reader]


def require_fields(record: object, fields: Iterable[str], where: str) -> dict:
    """Check that a JSON record is an object holding every field; name the file and field if not."""
    if not isinstance(record, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(record).__name__}")
    for field in fields:
        if field not in record:
            raise AnnotationError(f"{where}: missing field {field!r}")
    return record


def listed_rows(ids: Iterable[str], make_row: Callable[[str], dict | None], list_file: Path,
                source: Path) -> list[dict]:
    """One row per distinct listed id, in list order; ids ``make_row`` has nothing for (no captions in
    ``source``) are reported and left out, as real id lists contain them."""
    rows, missing = [], []
    for video_id in dict.fromkeys(ids):
        row = make_row(video_id)
        if row is None:
            missing.append(video_id)
        else:
            rows.append(row)
    if missing:
        logger.warning("%s: %d of %d ids have no captions in %s and are left out, e.g. %s", list_file.name,
                       len(missing), len(missing) + len(rows), source.name, ", ".join(missing[:5]))
    return rows


def cache_dir(root: Path) -> Path:
    """``{root}/.cache`` when writable, else a per-root folder under ~/.cache/emcl-multitask."""
    local = root / ".cache"
    try:
        local.mkdir(parents=True, exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    fallback = Path.home() / ".cache" / "emcl-multitask" / digest
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _fingerprint(sources: Iterable[Path], extra: str) -> str:
    for path in sources:
        if not path.is_file():
            raise AnnotationError(f"annotation file not found: {path}")
    parts = [extra] + [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def cached_table(root: Path, name: str, sources: list[Path], build: Callable[[], list[dict]]) -> datasets.Dataset:
    """Parse once with ``build`` into an Arrow table keyed by the source files' size and mtime."""
    target = cache_dir(root) / f"{name}-{_fingerprint(sources, name)}"
    if (target / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(target))
    datasets.disable_progress_bars()
    records = build()
    if not records:
        raise AnnotationError(f"{name}: no records parsed from {', '.join(str(s) for s in sources)}")
    table = datasets.Dataset.from_list(records)
    with atomic_path(target, keep_existing=True) as tmp:  # another rank or worker may finish first
        table.save_to_disk(str(tmp))
    return datasets.load_from_disk(str(target))
