"""Checkpoint directories: atomic writes, ``last`` link, retention, and lookup for resume."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

META = "meta.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that does not exist, is incomplete, or belongs to another task."""


def staging_dir(ckpt_root: Path, step: int) -> Path:
    return ckpt_root / f"step_{step}.tmp"


def finalize(ckpt_root: Path, step: int, meta: dict, keep: int | None) -> Path:
    """Write meta.json last, rename the staging folder into place, repoint ``last``, prune old ones.

    A crash at any point leaves either the previous complete checkpoint or a ``.tmp`` folder that
    lookup ignores, never a checkpoint that ``resume=auto`` would pick and fail on.
    """
    tmp, final = staging_dir(ckpt_root, step), ckpt_root / f"step_{step}"
    (tmp / META).write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    link_tmp = ckpt_root / "last.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, ckpt_root / "last")
    _prune(ckpt_root, keep)
    return final


def complete_steps(ckpt_root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    found = []
    for child in ckpt_root.iterdir() if ckpt_root.is_dir() else []:
        match = _STEP_DIR.match(child.name)
        if match and (child / META).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _prune(ckpt_root: Path, keep: int | None) -> None:
    if not keep:
        return
    for _, folder in complete_steps(ckpt_root)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def latest(ckpt_root: Path) -> Path | None:
    steps = complete_steps(ckpt_root)
    return steps[-1][1] if steps else None


def read_meta(path: str | Path, task: str | None) -> dict:
    """Validate a checkpoint folder (for ``task``, unless None) and return its metadata."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} does not exist")
    if not (folder / META).is_file():
        raise CheckpointError(f"checkpoint {folder} is incomplete (no {META}); was it written by this framework?")
    meta = json.loads((folder / META).read_text())
    if task is not None and meta.get("task") != task:
        raise CheckpointError(f"checkpoint {folder} belongs to task {meta.get('task')!r}, not {task!r}")
    return meta
