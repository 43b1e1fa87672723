"""Find videos by walking a folder: the public loaders' rule for ActivityNet, LSMDC, MSVD and DiDeMo.

A video's id is its file name without the last extension (``v_abc.mkv`` -> ``v_abc``,
``3001_MOVIE_00.01.02.000-00.01.04.000.avi`` -> ``3001_MOVIE_00.01.02.000-00.01.04.000``,
``x.mov.mp4`` -> ``x.mov``), wherever it sits under the folder.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from multitask.errors import MissingInputError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".3gp", ".mpg", ".mpeg", ".flv", ".wmv"}


def strip_last_extension(name: str) -> str:
    stem, dot, _ = name.rpartition(".")
    return stem if dot else name


def video_id(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The id of a video file: its path relative to ``root`` (its name when no root is given) without the
    last extension. The one naming rule of the loaders, ``multitask index`` and ``Model.build_index``."""
    relative = Path(path).relative_to(root) if root is not None else Path(Path(path).name)
    return str(relative.with_name(strip_last_extension(relative.name) or relative.name))


def outside(paths: dict[str, str], root: Path) -> dict[str, str]:
    """The ids whose video path resolves (symlinks followed) outside ``root``: ``../`` or absolute ids in an
    annotation file, or a link out of the tree. {id: resolved path}."""
    base = os.path.realpath(root)
    found = {}
    for video_id, path in paths.items():
        real = os.path.realpath(path)
        if os.path.commonpath([base, real]) != base:
            found[video_id] = real
    return found


def index_videos(folder: Path) -> dict[str, str]:
    """Map id -> path for every video file under ``folder``; the first path (sorted) wins a duplicate id."""
    if not folder.is_dir():
        raise MissingInputError(f"video folder {folder} does not exist (set data.video_root)")
    index: dict[str, str] = {}
    duplicates = 0
    for directory, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if Path(name).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            key = strip_last_extension(name)
            if key in index:
                duplicates += 1
                continue
            index[key] = os.path.join(directory, name)
    if duplicates:
        logger.warning("%d video files under %s repeat an id already found; the first (sorted) is used",
                       duplicates, folder)
    return index


def indexed_path(index: dict[str, str], video_id: str) -> str:
    return index[video_id]
