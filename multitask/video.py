"""Clips from videos: uniform frame sampling, resizing, cropping, CLIP normalisation, padding.

``load_clip`` = ``frames_to_clip`` (pure: uint8 frames -> normalised, cropped, padded clip) after
``decode_frames`` (the sampled uint8 frames at reduced size, read by ``multitask.video_io`` in this
process or in an isolated decoder), which the frame cache stores.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from multitask.video_io import VideoInfo, read_frames

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
              max_seconds: float | None = None, decoder=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``num_frames`` uniformly sampled frames at reduced size (of the first ``max_seconds`` if given).

    Returns frames (num_frames, 3, image_size, image_size), CLIP-normalised and zero-padded, and a
    mask (num_frames,) with 1 for real frames. ``rng`` randomises the frame offsets within their
    segments (training); ``augment`` additionally takes a random crop of a slightly larger resize.
    ``decoder``: a ``multitask.decoding.Decoder`` to decode in (None: in this process).
    """
    raw = decode_frames(path, info, num_frames, image_size, rng, augment, max_seconds, decoder)
    return frames_to_clip(raw, info, num_frames, image_size, rng, augment)


def _decode_size(info: VideoInfo, image_size: int, augment: bool) -> tuple[int, int]:
    return reduced_size(info, round(image_size * 1.15) if augment else image_size)


def decode_frames(path: str, info: VideoInfo, num_frames: int, image_size: int,
                  rng: np.random.Generator | None = None, augment: bool = False,
                  max_seconds: float | None = None, decoder=None) -> np.ndarray:
    """The sampled frames as decord returns them at the reduced size: (t, h, w, 3) uint8, t <= num_frames.
    The frame offsets are drawn here (``info.num_frames`` is the decodable count the probe found), the
    frames read by ``read_frames`` in this process or in ``decoder``'s child."""
    request = frame_request(path, info, num_frames, image_size, rng, augment, max_seconds)
    return read_frames(*request) if decoder is None else decoder.call("read_frames", *request)


def frame_request(path: str, info: VideoInfo, num_frames: int, image_size: int,
                  rng: np.random.Generator | None = None, augment: bool = False,
                  max_seconds: float | None = None) -> tuple[str, list[int], int, int]:
    """The arguments of ``read_frames`` for one clip: (path, the sampled frame indices, height, width)."""
    height, width = _decode_size(info, image_size, augment)
    idx = sample_indices(usable_frames(info, info.num_frames, max_seconds), num_frames, rng).tolist()
    return path, idx, height, width


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
