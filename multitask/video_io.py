"""What a decoder child process runs (``multitask.decoding``): opening, probing and reading videos with
decord. Only numpy and decord here, so a decoder process starts in a fraction of a second and stays small.
A decoder module of one's own (``data.decoder``) provides the same three functions: ``probe_video``,
``read_frames``, ``decode_all_frames``. ``probe_video`` and ``read_frames`` take a path or a whole video file's
bytes (a sample of a tar shard, ``data=shards``).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multitask.errors import DataError


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    height: int
    width: int
    fps: float = 0.0  # 0 when the container does not say


def _decord():
    import decord  # imported lazily: decord prints to stderr on import in some builds

    decord.bridge.set_bridge("native")
    return decord


def _open(source: str | os.PathLike | bytes, **size):
    """A decord reader of a file path, or of a video file held in memory."""
    uri = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    return _decord().VideoReader(uri, num_threads=1, **size)


def _absent(source: str | os.PathLike | bytes) -> str | None:
    """Why there is nothing to decode ("missing", "empty file"), or None."""
    if isinstance(source, bytes):
        return None if source else "empty file"
    path = Path(source)
    if not path.is_file():
        return "missing"
    return None if path.stat().st_size else "empty file"


def probe_video(path: str | os.PathLike | bytes, last_frame: bool = True) -> VideoInfo | str:
    """Open a video (a path, or its bytes) and decode its first and last frame. Returns its info or the reason
    it is bad. ``last_frame=False`` decodes the first frame only and trusts the container's frame count (the
    last frame can cost a whole group of pictures to decode; streamed samples are probed every time they come)."""
    absent = _absent(path)
    if absent:
        return absent
    try:
        reader = _open(path)
        if len(reader) == 0:
            return "no frames"
        n, frames = _first_and_last(reader) if last_frame else (len(reader), reader.get_batch([0]).asnumpy())
        fps = float(reader.get_avg_fps() or 0.0)
    except Exception as err:  # decord raises its own DECORDError and RuntimeError variants
        return f"undecodable ({error_summary(err)})"
    return VideoInfo(num_frames=n, height=int(frames.shape[1]), width=int(frames.shape[2]), fps=fps)


def error_summary(err: BaseException, width: int = 120) -> str:
    """``Type: first line of the message``, cut to ``width`` characters: decoder errors run long."""
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0][:width] if lines else ''}"


def _first_and_last(reader) -> tuple[int, np.ndarray]:
    """(frames up to the last decodable one, the first and that last frame (2, H, W, 3)).

    Containers can over-report the frame count by a few frames, and decord then fails on the last ones;
    up to max(4, 2%) missing at the end are tolerated (sampling uses the decodable count), more is an error.
    """
    n = len(reader)
    first_error = None
    for count in range(n, max(1, n - max(4, n // 50)) - 1, -1):
        try:
            return count, reader.get_batch([0, count - 1]).asnumpy()
        except Exception as err:  # try one frame shorter
            first_error = first_error or err
    raise first_error


def read_frames(path: str | bytes, indices: list[int], height: int, width: int) -> np.ndarray:
    """Frames ``indices`` of a video (a path, or its bytes) at (height, width): (t, height, width, 3) uint8."""
    return _open(path, width=width, height=height).get_batch(indices).asnumpy()


def decode_all_frames(path: str, chunk: int = 64) -> int:
    """Decode every frame (at reduced size, in order) and return the count; raises at the first bad frame, with
    its index. What ``multitask doctor --full`` runs: damage between the first and last frame shows here."""
    reader = _decord().VideoReader(path, width=64, height=64, num_threads=1)
    total = len(reader)
    for start in range(0, total, chunk):
        try:
            reader.get_batch(list(range(start, min(start + chunk, total))))
        except Exception as err:  # decord raises its own error types
            raise RuntimeError(f"frames {start}-{min(start + chunk, total) - 1} of {total}: {error_summary(err)}") \
                from err
    return total


class UnreadableVideoError(DataError):
    """Some input videos are missing or cannot be decoded; ``reasons`` maps each to why, as the message lists."""

    def __init__(self, reasons: dict[str, str], total: int) -> None:
        self.reasons = reasons
        listing = "\n".join(f"  {p}: {reason}" for p, reason in reasons.items())
        super().__init__(f"{len(reasons)} of {total} videos cannot be read:\n{listing}")
