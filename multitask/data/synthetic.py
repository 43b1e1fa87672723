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
from multitask.data.synthetic_render import render_clip
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

FORMAT_VERSION = 3  # 2: trigonometry from basic operations only; 3: x264 cpu-independent (bytes whatever is loaded)
MARKER = ".synthetic_complete.json"

_QA_SPLIT_FILE = {"train": "train_qa.json", "validate": "val_qa.json", "test": "test_qa.json"}
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
        frames = render_clip(attrs, p["size"], rng)  # (T, H, W, 3) uint8
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


def _encode(frames: np.ndarray, path: Path, fps: int) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264 yuv420p in the container of the file's extension
    (.mp4, .avi or .mkv; single-threaded: bit-exact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=_CONTAINERS[path.suffix]) as container:
        # cpu-independent: without it x264's output depended on the state of the process it ran in (with torch
        # imported, 11-19 of 68 tiny clips differed from one run to the next)
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "18",
                                                                     "x264-params": "cpu-independent=1"})
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
