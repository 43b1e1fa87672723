"""Find missing, empty or undecodable videos before training (``data.on_bad_video``)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from multitask.decoding import DecoderSpec, map_decoded
from multitask.errors import ConfigError, DataError
from multitask.files import atomic_write_text
from multitask.video_io import VideoInfo

logger = logging.getLogger(__name__)

POLICIES = ("error", "skip")


class BadVideoError(DataError):
    """Raised before training when ``data.on_bad_video=error`` and some videos are unusable."""


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _load_cache(cache_file: Path) -> dict:
    try:
        return json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def probe_with_cache(paths: list[str], cache_file: Path, spec: DecoderSpec,
                     show_progress: bool) -> dict[str, VideoInfo | str]:
    """The quick probe (first and last frame) of every path, skipping files whose size and mtime match the
    cached probe."""
    cache, results, todo = _load_cache(cache_file), {}, []
    for path in paths:
        entry, stamp = cache.get(path), _stamp(path)
        if entry and stamp and entry["stamp"] == stamp and len(entry.get("info", [])) == 4:
            results[path] = VideoInfo(*entry["info"])
        else:
            todo.append(path)
    results.update(map_decoded("probe_video", todo, spec, show_progress=show_progress))
    for path in todo:
        if isinstance(results[path], VideoInfo):  # only good files are cached: bad ones are re-checked
            info = results[path]
            cache[path] = {"stamp": _stamp(path), "info": [info.num_frames, info.height, info.width, info.fps]}
    if todo:
        atomic_write_text(cache_file, json.dumps(cache))
    return results


def check_videos(paths: list[str], cache_file: Path, policy: str, spec: DecoderSpec,
                 show_progress: bool = True) -> tuple[dict[str, VideoInfo], dict[str, str]]:
    """Probe every video once. Returns (info of good files, reason for each bad file).

    ``policy='error'`` raises BadVideoError naming every bad file; ``'skip'`` logs them and returns.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown data.on_bad_video {policy!r}; known: {', '.join(POLICIES)}")
    results = probe_with_cache(sorted(set(paths)), cache_file, spec, show_progress)
    good = {p: r for p, r in results.items() if isinstance(r, VideoInfo)}
    bad = {p: r for p, r in results.items() if not isinstance(r, VideoInfo)}
    if bad and policy == "error":
        listing = "\n".join(f"  {p}: {reason}" for p, reason in sorted(bad.items()))
        raise BadVideoError(f"{len(bad)} of {len(results)} videos are unusable (data.on_bad_video=error; "
                            f"set data.on_bad_video=skip to train on the rest):\n{listing}")
    if bad:
        logger.warning("skipping %d of %d videos that are missing or undecodable: %s", len(bad), len(results),
                       ", ".join(sorted(Path(p).name for p in bad)))
    return good, bad
