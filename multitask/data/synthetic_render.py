"""Rendering of the synthetic clips: low-saturation textures, anti-aliased shapes and the frames of a clip,
with trigonometry from IEEE basic operations only, so a seed gives the same pixels on every CPU."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from multitask.data.synthetic_words import SHAPE_WORDS

_SUPERSAMPLE = 4
_SIN_TERMS = [(-1) ** k / math.factorial(2 * k + 1) for k in range(12)]  # Taylor series of sin to x^23


def _sin(x: np.ndarray | float) -> np.ndarray:
    """sin from IEEE basic operations (+, -, *, /, rint), which every CPU rounds alike: numpy's own sin has
    SIMD variants (AVX512 or not) that differ in the last bit, and a pixel at a rounding edge then flips,
    and with it the H.264 encoder's decisions. Error < 1e-15 on the arguments used here."""
    x = np.asarray(x, np.float64)
    k = np.rint(x / np.pi)
    r = x - k * np.pi  # |r| <= pi / 2; sin(r + k pi) = (-1)^k sin(r)
    r2, acc = r * r, np.full_like(r, _SIN_TERMS[-1])
    for term in reversed(_SIN_TERMS[:-1]):
        acc = acc * r2 + term
    return np.where(np.remainder(k, 2) == 0, acc * r, -acc * r)


def _cos(x: np.ndarray | float) -> np.ndarray:
    return _sin(np.asarray(x, np.float64) + np.pi / 2)


def _render_background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Low-saturation texture, (H, W, 3) float32 in [0, 255]."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size  # (H, W) each, fractions of the frame
    theta = rng.uniform(0, np.pi)
    u = x * _cos(theta) + y * _sin(theta)  # (H, W) coordinate along a random axis
    if kind == "stripes":
        t = (_sin(2 * np.pi * rng.uniform(2.5, 6.0) * u + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
    elif kind == "checker":
        cell = int(rng.choice([4, 8, 16])) * size // 64 or 1
        t = ((np.arange(size)[:, None] // cell + np.arange(size)[None, :] // cell) % 2).astype(np.float32)
    elif kind == "gradient":
        t = (u - u.min()) / (u.max() - u.min())
    else:  # "noise": a few random low-frequency waves plus fine grain
        t = sum(_sin(2 * np.pi * (rng.uniform(-3, 3) * x + rng.uniform(-3, 3) * y) + rng.uniform(0, 6.3))
                for _ in range(3))
        t = t + rng.normal(0.0, 0.3, (size, size))
        t = (t - t.min()) / (t.max() - t.min())
    low, high = sorted(rng.uniform(60, 190, 2))
    high = max(high, low + 35.0)
    tint = rng.uniform(-10, 10, 3)  # keeps saturation low: never confusable with the object colours
    grey = low + (high - low) * np.asarray(t, np.float32)  # (H, W)
    return np.clip(grey[..., None] + tint, 0, 255).astype(np.float32)


def shape_coverage(shape: str, centres: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1], (T, H, W), of a shape at each of ``centres`` (T, 2) = (x, y).

    Coordinates are fractions of the frame. The shape is rasterised once at 4x4 sub-pixels and shifted,
    so positions are exact to a quarter pixel.
    """
    ss, box = _SUPERSAMPLE, int(np.ceil(2 * radius * size)) + 2  # sprite box, pixels
    offs = (np.arange(box * ss) + 0.5) / (size * ss) - box / (2 * size)  # sub-pixel offsets from the centre
    sprite = _inside(shape, offs[None, :], offs[:, None], radius)  # (box*ss, box*ss) bool; y points down
    # Pixel (k) of a sprite shifted by f sub-pixels covers sub-pixels [k*ss - f, (k+1)*ss - f): box sums
    # from cumulative sums, for every shift f in 0..ss-1 along each axis.
    edges = np.clip(np.arange(box + 2)[None, :] * ss - np.arange(ss)[:, None], 0, box * ss)  # (ss, box+2)
    rows = np.pad(sprite.cumsum(0, dtype=np.float32), ((1, 0), (0, 0)))  # (box*ss+1, box*ss)
    by_row = np.diff(rows[edges], axis=1)  # (ss, box+1, box*ss): shift fy, pixel row, sub-pixel column
    cols = np.pad(by_row.cumsum(2), ((0, 0), (0, 0), (1, 0)))  # (ss, box+1, box*ss+1)
    patches = np.diff(cols[:, :, edges], axis=3) / ss**2  # (fy, box+1, fx, box+1)
    out = np.zeros((len(centres), size, size), np.float32)
    for t, (cx, cy) in enumerate(np.asarray(centres, np.float64)):
        px, fx = divmod(int(round((cx * size - box / 2) * ss)), ss)  # whole pixels, sub-pixel remainder
        py, fy = divmod(int(round((cy * size - box / 2) * ss)), ss)
        patch = patches[fy, :, fx]  # (box+1, box+1)
        y0, x0, y1, x1 = max(py, 0), max(px, 0), min(py + box + 1, size), min(px + box + 1, size)
        if y1 > y0 and x1 > x0:
            out[t, y0:y1, x0:x1] = patch[y0 - py:y1 - py, x0 - px:x1 - px]
    return out


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Point-in-shape test on offsets from the centre (broadcast to (h, w))."""
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * radius
    if shape == "triangle":  # equilateral, pointing up, circumradius = radius; normals face away from vertices
        angles = np.deg2rad([270.0, 30.0, 150.0])
        return np.all([dx * _cos(a) - dy * _sin(a) <= radius / 2 for a in angles], axis=0)
    if shape == "star":  # five points, inner radius 0.45 * radius, one tip up (y points down)
        angles = np.pi / 2 + np.arange(10) * np.pi / 5  # tips and inner vertices, alternating
        reach = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
        return _inside_polygon(dx, dy, reach * _cos(angles), -reach * _sin(angles))
    raise ValueError(f"unknown shape {shape!r}; known: {list(SHAPE_WORDS)}")


def _inside_polygon(px: np.ndarray, py: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of points (px, py) (broadcast) against the polygon (xs, ys)."""
    px, py = np.broadcast_arrays(px, py)
    inside = np.zeros(px.shape, bool)
    for i in range(len(xs)):
        (x0, y0), (x1, y1) = (xs[i - 1], ys[i - 1]), (xs[i], ys[i])
        if y0 == y1:
            continue
        crosses = (y1 > py) != (y0 > py)
        inside ^= crosses & (px < (x0 - x1) * (py - y1) / (y0 - y1) + x1)
    return inside


def render_clip(attrs: dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames (T, H, W, 3) uint8: background with a slow flicker, distractor, then the moving shape."""
    bg = _render_background(attrs["background"], size, rng)  # (H, W, 3)
    num_frames = attrs["num_frames"]
    phase = np.linspace(0, rng.uniform(1, 3), num_frames) + rng.uniform(0, 6.3)
    flicker = (rng.uniform(0, 4) * _sin(phase)).astype(np.float32)  # (T,) slow brightness change
    dis = attrs["distractor"]
    if dis is not None:
        cov = shape_coverage(dis["shape"], np.asarray([dis["centre"]]), dis["radius"], size)[0, ..., None]
        bg = bg * (1 - cov) + np.asarray(dis["rgb"], np.float32) * cov
    start, end = np.asarray(attrs["start"]), np.asarray(attrs["end"])
    centres = start + (end - start) * np.linspace(0.0, 1.0, num_frames)[:, None]  # (T, 2)
    cov = shape_coverage(attrs["shape"], centres, attrs["radius"], size)  # (T, H, W)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for ch in range(3):  # one colour plane at a time: numpy is slow at broadcasting a trailing axis of 3
        plane = bg[..., ch][None] + flicker[:, None, None]  # (T, H, W)
        plane += (attrs["rgb"][ch] - plane) * cov + 0.5  # blend, then round by truncation
        frames[..., ch] = np.clip(plane, 0, 255, out=plane)
    return frames
