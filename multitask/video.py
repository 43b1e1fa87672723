"""Video decoding with decord: probing, uniform frame sampling, resizing, CLIP normalisation.

``load_clip`` = ``frames_to_clip`` (pure: uint8 frames -> normalised, cropped, padded clip) after
``decode_frames`` (the sampled uint8 frames at reduced size), which the frame cache stores.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


def probe_video(path: str | os.PathLike) -> VideoInfo | str:
    """Open a video and decode its first and last frame. Returns its info or the reason it is bad."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        reader = _decord().VideoReader(str(path), num_threads=1)
        if len(reader) == 0:
            return "no frames"
        n, frames = _first_and_last(reader)
        fps = float(reader.get_avg_fps() or 0.0)
    except Exception as err:  # decord raises its own DECORDError and RuntimeError variants
        return f"undecodable ({error_summary(err)})"
    return VideoInfo(num_frames=n, height=int(frames.shape[1]), width=int(frames.shape[2]), fps=fps)


class UnreadableVideoError(ValueError):
    """Some input videos are missing or cannot be decoded; ``reasons`` maps each to why, as the message lists."""

    def __init__(self, reasons: dict[str, str], total: int) -> None:
        self.reasons = reasons
        listing = "\n".join(f"  {p}: {reason}" for p, reason in reasons.items())
        super().__init__(f"{len(reasons)} of {total} videos cannot be read:\n{listing}")


def probe_all(paths: list[str]) -> tuple[dict[str, VideoInfo], dict[str, str]]:
    """(info of readable videos, reason for each unreadable one)."""
    results = {p: probe_video(p) for p in paths}
    return ({p: r for p, r in results.items() if isinstance(r, VideoInfo)},
            {p: r for p, r in results.items() if not isinstance(r, VideoInfo)})


def require_readable(paths: list[str]) -> dict[str, VideoInfo]:
    if not paths:
        raise ValueError("no video paths given")
    good, bad = probe_all(paths)
    if bad:
        raise UnreadableVideoError(bad, len(paths))
    return good


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


def probe_videos(paths: list[str], num_threads: int = 4, show_progress: bool = True) -> dict[str, VideoInfo | str]:
    """probe_video over many files in a thread pool, with a progress bar."""
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        results = list(tqdm(pool.map(probe_video, paths), total=len(paths), desc="checking videos",
                            disable=not show_progress, leave=False))
    return dict(zip(paths, results))


def sample_indices(num_total: int, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Uniform sampling: one frame per equal segment; segment centre, or random in it when rng is given.

    A clip shorter than num_frames returns all its frames (the caller pads and masks).
    """
    if num_total <= num_frames:
        return np.arange(num_total)
    edges = np.floor(np.linspace(0, num_total, num_frames + 1)).astype(int)
    starts, ends = edges[:-1], edges[1:]  # every segment holds at least one frame here
    if rng is None:
        return (starts + ends - 1) // 2
    return rng.integers(starts, ends)


def reduced_size(info: VideoInfo, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to ``short_side``, never upsampling the decoder."""
    scale = short_side / min(info.height, info.width)
    return max(short_side, round(info.height * scale)), max(short_side, round(info.width * scale))


def crop_box(height: int, width: int, size: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """Top-left corner of a size x size crop: centred, or random when rng is given."""
    if rng is None:
        return (height - size) // 2, (width - size) // 2
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def usable_frames(info: VideoInfo, decoded: int, max_seconds: float | None) -> int:
    """Frames to sample from: all, or those of the first ``max_seconds`` when the frame rate is known."""
    usable = min(decoded, info.num_frames)
    if max_seconds is not None and info.fps > 0:
        usable = min(usable, max(1, int(round(max_seconds * info.fps))))
    return usable


def load_clip(path: str, info: VideoInfo, num_frames: int, image_size: int,
              rng: np.random.Generator | None = None, augment: bool = False,
              max_seconds: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``num_frames`` uniformly sampled frames at reduced size (of the first ``max_seconds`` if given).

    Returns frames (num_frames, 3, image_size, image_size), CLIP-normalised and zero-padded, and a
    mask (num_frames,) with 1 for real frames. ``rng`` randomises the frame offsets within their
    segments (training); ``augment`` additionally takes a random crop of a slightly larger resize.
    """
    raw = decode_frames(path, info, num_frames, image_size, rng, augment, max_seconds)
    return frames_to_clip(raw, info, num_frames, image_size, rng, augment)


def _decode_size(info: VideoInfo, image_size: int, augment: bool) -> tuple[int, int]:
    return reduced_size(info, round(image_size * 1.15) if augment else image_size)


def decode_frames(path: str, info: VideoInfo, num_frames: int, image_size: int,
                  rng: np.random.Generator | None = None, augment: bool = False,
                  max_seconds: float | None = None) -> np.ndarray:
    """The sampled frames as decord returns them at the reduced size: (t, h, w, 3) uint8, t <= num_frames."""
    height, width = _decode_size(info, image_size, augment)
    reader = _decord().VideoReader(path, width=width, height=height, num_threads=1)
    idx = sample_indices(usable_frames(info, len(reader), max_seconds), num_frames, rng)
    return reader.get_batch(idx.tolist()).asnumpy()  # (t, h, w, 3)


def frames_to_clip(raw: np.ndarray, info: VideoInfo, num_frames: int, image_size: int,
                   rng: np.random.Generator | None = None, augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, h, w, 3) uint8 frames from ``decode_frames`` -> the cropped, normalised, padded clip and its mask."""
    height, width = _decode_size(info, image_size, augment)
    frames = torch.from_numpy(raw)  # (t, h, w, 3) uint8
    top, left = crop_box(height, width, image_size, rng if augment else None)
    if frames.shape[1:3] == (height, width):  # crop first: fewer pixels to convert, same values
        clip = _to_float(frames[:, top: top + image_size, left: left + image_size])  # (t, 3, S, S)
    else:  # decoders may ignore the requested size
        clip = F.interpolate(_to_float(frames), size=(height, width), mode="bilinear", antialias=True,
                             align_corners=False)[:, :, top: top + image_size, left: left + image_size]
    return pad_frames(normalize_(clip), num_frames)


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    """(t, h, w, 3) uint8 -> (t, 3, h, w) float32 in [0, 1], channels-first in memory (fast to normalise)."""
    return frames.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def normalize_(clip: torch.Tensor) -> torch.Tensor:
    """CLIP mean/std normalisation, in place, of (t, 3, H, W) frames in [0, 1]."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return clip.sub_(mean).div_(std)


def pad_frames(clip: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (t, 3, H, W) to (num_frames, 3, H, W); mask marks the real frames."""
    t = clip.shape[0]
    mask = torch.zeros(num_frames, dtype=torch.long)
    mask[:t] = 1
    if t < num_frames:
        clip = torch.cat([clip, clip.new_zeros((num_frames - t,) + tuple(clip.shape[1:]))])
    return clip, mask
