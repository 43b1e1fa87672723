"""Atomic file writes: a reader, a resumed run or another process sees the old file or the new one, never
half of one. The one write-then-rename helper every writer of the project uses; and the lock that keeps
two runs out of one run directory."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from multitask.errors import ConfigError

LOCK_FILE = ".lock"


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


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` exclusively for the duration, or stop at once when another live process holds it
    (a run still writing there). The kernel drops the lock when its holder dies, even by SIGKILL, so a crashed
    run never blocks the one that resumes it."""
    with open(folder / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConfigError(f"another run (pid {holder}) is writing to {folder}: wait for it to end, or choose "
                              "another output_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
