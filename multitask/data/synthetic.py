"""Synthetic MSR-VTT-shaped dataset: moving coloured shapes as real H.264 clips.

``generate_synthetic(root, seed)`` writes, under ``root``, exactly the public MSR-VTT / MSRVTT-QA layout
so the real loaders read it unchanged::

    videos/all/video{i}.mp4            H.264 (libx264, yuv420p), size x size, min..max frames at fps
    MSRVTT_data.json                   {"info", "videos": [{video_id, id, split, category, url,
                                        "start time", "end time"}], "sentences": [{caption, video_id, sen_id}]}
    MSRVTT_train.7k.csv                video_id: the "train" split
    MSRVTT_train.9k.csv                video_id: every clip not in the retrieval test
    MSRVTT_JSFUSION_test.csv           key,vid_key,video_id,sentence: num_retrieval_test "test" clips
    msrvtt_qa/{train,val,test}_qa.json [{question, answer, video_id: int, id, category_id}]
    synthetic_attributes.json          {"video{i}": {colour, shape, direction, background, num_frames, ...}}
    .synthetic_complete.json           the generation parameters, written last (the cache marker)

With ``layout=activitynet|lsmdc|msvd|didemo`` the same clips are written under ``videos/`` with that
dataset's ids and file names, beside its annotation files (``synthetic_layouts``);
``synthetic_attributes.json`` is then keyed by those ids.

Ids 0..num_train-1 are "train", then "validate", then "test". Each clip shows one big filled shape
(radius 0.2-0.3 of the frame, saturated colour) travelling in a straight line (left/right/up/down,
at least 40% of the frame) over a low-saturation texture; some clips add a small static distractor
shape (used by the "how many" question). Every colour x shape x direction combination appears
equally often in each split (given enough clips). Each clip has 3-5 paraphrased captions. Everything
is a deterministic function of ``(seed, clip index)``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from itertools import product
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None

from multitask.data.synthetic_layouts import LAYOUTS
from multitask.data.synthetic_words import (
    BACKGROUND_WORDS,
    CAPTION_TEMPLATES,
    COLOUR_WORDS,
    COLOURS,
    DIRECTION_ADJECTIVES,
    DIRECTIONS,
    MOTION_PATHS,
    MOTION_VERBS,
    QA_CATEGORY,
    QUESTION_TEMPLATES,
    SHAPE_WORDS,
)
from multitask.files import atomic_path, atomic_write_text

FORMAT_VERSION = 2  # 2: trigonometry from basic operations only, so every CPU writes the same bytes
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
MARKER = ".synthetic_complete.json"

_QA_SPLIT_FILE = {"train": "train_qa.json", "validate": "val_qa.json", "test": "test_qa.json"}
_SUPERSAMPLE = 4
_CONTAINERS = {".mp4": "mp4", ".avi": "avi", ".mkv": "matroska"}


def generate_synthetic(root: str | Path, seed: int = 0, num_train: int = 800, num_val: int = 100,
                       num_test: int = 300, num_retrieval_test: int = 200, size: int = 64,
                       min_frames: int = 12, max_frames: int = 20, fps: int = 8, show_progress: bool = True,
                       distractor_prob: float = 0.25, layout: str = "msrvtt") -> Path:
    """Write the synthetic dataset under ``root`` (or reuse it if cached with identical parameters).

    ``layout``: ``msrvtt`` (MSR-VTT and MSRVTT-QA files) or one of ``activitynet``, ``lsmdc``, ``msvd``,
    ``didemo`` (that dataset's files and video names; see ``synthetic_layouts``). The clips are the same.
    """
    root = Path(root)
    counts = dict(seed=seed, num_train=num_train, num_val=num_val, num_test=num_test, size=size, fps=fps,
                  num_retrieval_test=num_retrieval_test, min_frames=min_frames, max_frames=max_frames)
    params = {"format_version": FORMAT_VERSION, **{k: int(v) for k, v in counts.items()},
              "distractor_prob": float(distractor_prob), "layout": layout}
    _check_params(params)
    if _read_json_or_none(root / MARKER) == params:
        return root
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".synthetic.lock", "w") as lock:
        if fcntl is not None:  # concurrent callers (e.g. every rank) wait here for the first one
            fcntl.flock(lock, fcntl.LOCK_EX)
        if _read_json_or_none(root / MARKER) != params:
            _generate(root, params, show_progress)
    return root


def _msrvtt_file(i: int, clip: dict[str, Any]) -> tuple[str, str]:
    return f"video{i}", f"all/video{i}.mp4"


def _generate(root: Path, p: dict[str, Any], show_progress: bool) -> None:
    """Write every clip, then the annotations, then the marker (so an interrupted run is redone)."""
    (root / MARKER).unlink(missing_ok=True)
    shutil.rmtree(root / "videos", ignore_errors=True)  # stale clips of an earlier, larger or other layout
    name_of = _msrvtt_file if p["layout"] == "msrvtt" else LAYOUTS[p["layout"]][0]
    sizes = [p["num_train"], p["num_val"], p["num_test"]]
    splits = [split for split, n in zip(("train", "validate", "test"), sizes) for _ in range(n)]
    combos = _balanced_combos(sizes, np.random.default_rng([p["seed"], 0]))
    clips: list[dict[str, Any]] = []
    ids: list[str] = []
    for i in tqdm(range(len(splits)), desc="synthetic clips", disable=not show_progress):
        rng = np.random.default_rng([p["seed"], 1, i])  # one stream per clip
        attrs = _sample_attributes(combos[i], splits[i], p, rng)
        frames = _render_clip(attrs, p["size"], rng)  # (T, H, W, 3) uint8
        video_id, relative = name_of(i, attrs)
        _encode(frames, root / "videos" / relative, p["fps"])
        attrs["captions"] = _captions(attrs, rng)
        attrs["questions"] = _questions(attrs, p["distractor_prob"] > 0, rng)
        clips.append(attrs)
        ids.append(video_id)
    if p["layout"] == "msrvtt":
        _write_annotations(root, clips, p["num_retrieval_test"], p["fps"])
    else:
        LAYOUTS[p["layout"]][1](root, clips, ids, p["fps"])
    attributes = {v: {k: x for k, x in c.items() if k not in ("captions", "questions")} for v, c in zip(ids, clips)}
    atomic_write_text(root / "synthetic_attributes.json", json.dumps(attributes, indent=1))
    atomic_write_text(root / MARKER, json.dumps(p, indent=1))


def _check_params(p: dict[str, Any]) -> None:
    if p["size"] < 16 or p["size"] % 2:
        raise ValueError(f"size must be even and >= 16 (yuv420p), got {p['size']}")
    if not 2 <= p["min_frames"] <= p["max_frames"]:
        raise ValueError(f"need 2 <= min_frames <= max_frames, got {p['min_frames']}, {p['max_frames']}")
    if min(p["num_train"], p["num_val"], p["num_test"]) < 0 or p["num_train"] + p["num_val"] + p["num_test"] == 0:
        raise ValueError("num_train/num_val/num_test must be >= 0 and not all empty")
    if not 0 <= p["num_retrieval_test"] <= p["num_test"]:
        raise ValueError(f"num_retrieval_test ({p['num_retrieval_test']}) must be in [0, num_test]")
    if not 0.0 <= p["distractor_prob"] <= 1.0:
        raise ValueError(f"distractor_prob must be in [0, 1], got {p['distractor_prob']}")
    if p["layout"] != "msrvtt" and p["layout"] not in LAYOUTS:
        raise ValueError(f"unknown layout {p['layout']!r}; known: msrvtt, {', '.join(LAYOUTS)}")


def _balanced_combos(split_sizes: list[int], rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Per split, cycle through shuffled copies of every (colour, shape, direction) combination."""
    all_combos = list(product(COLOURS, SHAPE_WORDS, DIRECTIONS))
    out: list[tuple[str, str, str]] = []
    for n in split_sizes:
        chunk: list[tuple[str, str, str]] = []
        while len(chunk) < n:
            chunk.extend(all_combos[j] for j in rng.permutation(len(all_combos)))
        out.extend(chunk[:n])
    return out


def _sample_attributes(combo: tuple[str, str, str], split: str, p: dict[str, Any],
                       rng: np.random.Generator) -> dict[str, Any]:
    """Motion path, colour jitter, background and optional distractor of one clip (fractions of frame)."""
    colour, shape, direction = combo
    num_frames = int(rng.integers(p["min_frames"], p["max_frames"] + 1))
    radius = float(rng.uniform(0.2, 0.3))
    lo, hi = 0.5 * radius, 1.0 - 0.5 * radius  # the centre may leave the frame by half a radius
    travel = float(rng.uniform(0.4, hi - lo))  # >= 40% of the frame, speed = travel / (T - 1)
    start_along = float(rng.uniform(lo, hi - travel))
    across = float(rng.uniform(radius, 1.0 - radius))
    dx, dy = DIRECTIONS[direction]
    a0, a1 = start_along, start_along + travel
    if dx + dy < 0:  # left / up: mirror the path
        a0, a1 = 1.0 - a0, 1.0 - a1
    start, end = ((a0, across), (a1, across)) if dx else ((across, a0), (across, a1))
    rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-12, 13, 3), 0, 255)
    attrs: dict[str, Any] = {
        "colour": colour, "shape": shape, "direction": direction, "split": split,
        "background": str(rng.choice(list(BACKGROUND_WORDS))), "num_frames": num_frames,
        "radius": radius, "start": [start[0], start[1]], "end": [end[0], end[1]], "rgb": rgb.tolist(),
        "speed": travel / (num_frames - 1), "num_objects": 1, "distractor": None,
        "category": int(rng.integers(0, 20))}
    if rng.random() < p["distractor_prob"]:
        attrs["distractor"] = _sample_distractor(attrs, rng)
        attrs["num_objects"] = 2
    return attrs


def _sample_distractor(attrs: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A small static shape of another colour and shape, on the far side of the main object's path."""
    colour = str(rng.choice([c for c in COLOURS if c != attrs["colour"]]))
    shape = str(rng.choice([s for s in SHAPE_WORDS if s != attrs["shape"]]))
    radius = float(rng.uniform(0.08, 0.11))
    horizontal = DIRECTIONS[attrs["direction"]][0] != 0
    across = attrs["start"][1] if horizontal else attrs["start"][0]
    far = radius + 0.02 if across > 0.5 else 1.0 - radius - 0.02
    along = float(rng.uniform(radius + 0.05, 0.95 - radius))
    centre = [along, far] if horizontal else [far, along]
    return {"colour": colour, "shape": shape, "radius": radius, "centre": centre, "rgb": list(COLOURS[colour])}


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


def _render_clip(attrs: dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
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


def _encode(frames: np.ndarray, path: Path, fps: int) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264 yuv420p in the container of the file's extension
    (.mp4, .avi or .mkv; single-threaded: bit-exact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=_CONTAINERS[path.suffix]) as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "18"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _captions(attrs: dict[str, Any], rng: np.random.Generator) -> list[str]:
    """3-5 distinct paraphrases (synonyms, templates, word order); rarely names the background."""
    direction, wanted, out = attrs["direction"], int(rng.integers(3, 6)), []
    for _ in range(200):
        c = str(rng.choice(COLOUR_WORDS[attrs["colour"]]))
        s = str(rng.choice(SHAPE_WORDS[attrs["shape"]]))
        verb, gerund = MOTION_VERBS[direction][rng.integers(len(MOTION_VERBS[direction]))]
        template = str(rng.choice(CAPTION_TEMPLATES))
        text = template.format(a=_article(c), c=c, s=s, v=verb, g=gerund, adj=DIRECTION_ADJECTIVES[direction],
                               p=rng.choice(MOTION_PATHS[direction]))
        if rng.random() < 0.15:
            text += " over " + str(rng.choice(BACKGROUND_WORDS[attrs["background"]]))
        elif attrs["distractor"] is not None and rng.random() < 0.25:
            dis = attrs["distractor"]
            text += f" past {_article(dis['colour'])} small {dis['colour']} {SHAPE_WORDS[dis['shape']][0]}"
        out += [] if text in out else [text]
        if len(out) == wanted:
            break
    return out


def _questions(attrs: dict[str, Any], with_count: bool, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One question per attribute: colour, shape, direction, and the object count if ``with_count``."""
    answers = {"colour": attrs["colour"], "shape": attrs["shape"], "direction": attrs["direction"],
               "count": "one" if attrs["num_objects"] == 1 else "two"}
    out = []
    for kind in ["colour", "shape", "direction"] + (["count"] if with_count else []):
        template = str(rng.choice(QUESTION_TEMPLATES[kind]))
        question = template.format(s=attrs["shape"], c=attrs["colour"],
                                   d=rng.choice(MOTION_PATHS[attrs["direction"]][:3]))
        out.append({"question": question, "answer": answers[kind], "category_id": QA_CATEGORY[kind]})
    return out


def _write_annotations(root: Path, clips: list[dict[str, Any]], num_retrieval_test: int, fps: int) -> None:
    """MSRVTT_data.json, the three CSV lists and the MSRVTT-QA files."""
    videos, sentences = [], []
    qa: dict[str, list[dict[str, Any]]] = {split: [] for split in _QA_SPLIT_FILE}
    for i, clip in enumerate(clips):
        vid = f"video{i}"
        videos.append({"category": clip["category"], "url": "", "video_id": vid, "start time": 0.0,
                       "end time": round(clip["num_frames"] / fps, 3), "split": clip["split"], "id": i})
        sentences += [{"caption": c, "video_id": vid, "sen_id": len(sentences) + k}
                      for k, c in enumerate(clip["captions"])]
        qa[clip["split"]] += [{**q, "video_id": i} for q in clip["questions"]]
    info = {"contributor": "multitask synthetic generator", "data_created": "synthetic", "version": "1.0",
            "description": "synthetic MSR-VTT-shaped dataset of moving shapes", "year": "synthetic"}
    atomic_write_text(root / "MSRVTT_data.json", json.dumps({"info": info, "videos": videos, "sentences": sentences}))
    test_ids = [i for i, c in enumerate(clips) if c["split"] == "test"][:num_retrieval_test]  # 1k-A analogue
    retrieval = set(test_ids)
    _write_csv(root / "MSRVTT_train.7k.csv", ["video_id"],
               [[f"video{i}"] for i, c in enumerate(clips) if c["split"] == "train"])
    _write_csv(root / "MSRVTT_train.9k.csv", ["video_id"],
               [[f"video{i}"] for i in range(len(clips)) if i not in retrieval])
    _write_csv(root / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
               [[f"ret{k}", f"msr{i}", f"video{i}", clips[i]["captions"][0]] for k, i in enumerate(test_ids)])
    (root / "msrvtt_qa").mkdir(exist_ok=True)
    next_id = 0
    for split, name in _QA_SPLIT_FILE.items():
        rows = [{**q, "id": next_id + k} for k, q in enumerate(qa[split])]
        next_id += len(rows)
        atomic_write_text(root / "msrvtt_qa" / name, json.dumps(rows))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    atomic_write_text(path, buf.getvalue())


def _read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or half-written
        return None
