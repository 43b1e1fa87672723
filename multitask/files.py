"""Atomic file writes: a reader, a resumed run or another process sees the old file or the new one, never
half of one. The one write-then-rename helper every writer of the project uses."""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (unique to this process) to write a file or folder into;
    on success it is renamed onto ``target``, on error removed. ``keep_existing``: when another process
    renamed its own copy into place first, keep that one (equal content, e.g. a shared cache)."""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:
            if not (keep_existing and target.exists()):
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
