"""Annotation files of the synthetic clips in the ActivityNet, LSMDC, MSVD and DiDeMo layouts.

Each layout gives every clip the kind of id and file name the real dataset uses (and its traps:
sentences with leading spaces, ids with dots or dashes, mixed extensions, ids listed without captions
or without a video) and writes the real annotation files, so the real loaders read them unchanged.
A clip is a dict with ``split`` (train / validate / test), ``captions`` and ``num_frames``.
"""
from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

Clip = dict[str, Any]
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
_DIDEMO_EXTENSIONS = (".mov", ".avi", ".3gp", ".m4v", ".mp4", ".")


def _activitynet_file(i: int, clip: Clip) -> tuple[str, str]:
    video_id = f"v_syn{i:05d}"
    return video_id, f"{clip['split']}/{video_id}{'.mkv' if i % 3 == 2 else '.mp4'}"


def _timestamp(seconds: float) -> str:
    minutes, sec = divmod(seconds, 60.0)
    return f"00.{int(minutes):02d}.{sec:06.3f}"


def _lsmdc_file(i: int, clip: Clip) -> tuple[str, str]:
    movie = f"{3000 + i // 5}_SYNTHETIC_MOVIE_{i // 5}"
    start = 2.5 * (i % 5) + 1.0
    clip_id = f"{movie}_{_timestamp(start)}-{_timestamp(start + 2.0)}"
    return clip_id, f"{movie}/{clip_id}.avi"


def _msvd_file(i: int, clip: Clip) -> tuple[str, str]:
    video_id = f"syn-{i:04d}_{i % 7}_{i % 7 + 4}"
    return video_id, f"{video_id}.avi"


def _didemo_file(i: int, clip: Clip) -> tuple[str, str]:
    name = f"{10000000 + i}@N0{i % 8}_{4000000000 + i}_{(i * 2654435761) % 16**10:010x}"
    name += _DIDEMO_EXTENSIONS[i % len(_DIDEMO_EXTENSIONS)]
    return name, f"{name}.mp4"  # as the official download writes them


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload), encoding="utf-8")


def _by_split(clips: list[Clip], ids: list[str], split: str) -> list[tuple[str, Clip]]:
    return [(v, c) for v, c in zip(ids, clips) if c["split"] == split]


def _write_activitynet(root: Path, clips: list[Clip], ids: list[str], fps: int) -> None:
    for split, (ids_file, captions_file) in {"train": ("train_ids.json", "train.json"),
                                             "test": ("val_ids.json", "val_1.json")}.items():
        records = {}
        for video_id, clip in _by_split(clips, ids, split):
            duration, n = clip["num_frames"] / fps, len(clip["captions"])
            records[video_id] = {"duration": duration,
                                 "timestamps": [[round(duration * k / n, 2), round(duration * (k + 1) / n, 2)]
                                                for k in range(n)],
                                 "sentences": [" " * min(k, 2) + c.capitalize() + "." for k, c in
                                               enumerate(clip["captions"])]}
        records[f"v_synNoVideo{split}"] = {"duration": 1.0, "timestamps": [[0.0, 1.0]], "sentences": ["Nothing."]}
        _write_json(root / captions_file, records)
        _write_json(root / ids_file, list(records) + [f"v_synNoCaption{split}"])
    test = _by_split(clips, ids, "test")  # a second annotator's captions of the same test videos
    _write_json(root / "val_2.json", {v: {"duration": c["num_frames"] / fps, "timestamps": [[0.0, 1.0]],
                                          "sentences": [c["captions"][-1]]} for v, c in test})


def _write_lsmdc(root: Path, clips: list[Clip], ids: list[str], fps: int) -> None:
    files = {"train": "LSMDC16_annos_training.csv", "validate": "LSMDC16_annos_val.csv",
             "test": "LSMDC16_challenge_1000_publictect.csv"}
    for split, name in files.items():
        lines = []
        for clip_id, clip in _by_split(clips, ids, split):
            times = clip_id.rsplit("_", 1)[1].split("-")
            sentences = clip["captions"][:1] if split == "test" else clip["captions"]
            lines += ["\t".join([clip_id, *times, *times, s.capitalize() + "."]) for s in sentences]
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_msvd(root: Path, clips: list[Clip], ids: list[str], fps: int) -> None:
    for split, name in SPLIT_NAMES.items():
        (root / f"{name}_list.txt").write_text("".join(v + "\n" for v, _ in _by_split(clips, ids, split)))
    words = {v: [re.findall(r"[a-z0-9]+", c.lower()) for c in clip["captions"]] for v, clip in zip(ids, clips)}
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(words, protocol=2))


def _write_didemo(root: Path, clips: list[Clip], ids: list[str], fps: int) -> None:
    annotation = 0
    for split, name in SPLIT_NAMES.items():
        chosen = _by_split(clips, ids, split)
        (root / f"{name}_list.txt").write_text("".join(v + "\n" for v, _ in chosen))
        records = []
        for video, clip in chosen:
            for caption in clip["captions"]:
                records.append({"num_segments": 6, "description": caption + ".", "dl_link": "",
                                "times": [[0, 0], [0, 1], [0, 0], [1, 1]], "video": video,
                                "annotation_id": annotation})
                annotation += 1
        _write_json(root / f"{name}_data.json", records)


# layout -> (clip index, clip -> (video id, file path under videos/), annotation writer)
Namer = Callable[[int, Clip], tuple[str, str]]
Writer = Callable[[Path, list[Clip], list[str], int], None]
LAYOUTS: dict[str, tuple[Namer, Writer]] = {
    "activitynet": (_activitynet_file, _write_activitynet),
    "lsmdc": (_lsmdc_file, _write_lsmdc),
    "msvd": (_msvd_file, _write_msvd),
    "didemo": (_didemo_file, _write_didemo),
}
