"""The synthetic MSR-VTT-shaped generator: layout, decodability, determinism, cache, visible content."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

decord = pytest.importorskip("decord")

from multitask.data.synthetic import (  # noqa: E402
    COLOURS,
    DIRECTIONS,
    MARKER,
    SHAPE_WORDS,
    _balanced_combos,
    generate_synthetic,
)

SMALL = dict(num_train=24, num_val=4, num_test=12, num_retrieval_test=8, show_progress=False)
NUM_VIDEOS = 24 + 4 + 12
ANNOTATIONS = ["MSRVTT_data.json", "MSRVTT_train.7k.csv", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv",
               "msrvtt_qa/train_qa.json", "msrvtt_qa/val_qa.json", "msrvtt_qa/test_qa.json",
               "synthetic_attributes.json"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic"), seed=0, **SMALL)


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _frames(root: Path, i: int) -> np.ndarray:
    vr = decord.VideoReader(str(root / "videos" / "all" / f"video{i}.mp4"))
    return vr.get_batch(list(range(len(vr)))).asnumpy()  # (T, H, W, 3) uint8


def test_msrvtt_layout(data_root: Path) -> None:
    data = json.loads((data_root / "MSRVTT_data.json").read_text())
    assert set(data) == {"info", "videos", "sentences"}
    videos = data["videos"]
    assert [v["video_id"] for v in videos] == [f"video{i}" for i in range(NUM_VIDEOS)]
    assert [v["id"] for v in videos] == list(range(NUM_VIDEOS))
    assert [v["split"] for v in videos] == ["train"] * 24 + ["validate"] * 4 + ["test"] * 12
    for v in videos:
        assert {"category", "url", "start time", "end time"} <= set(v)
        assert isinstance(v["category"], int) and isinstance(v["end time"], float)
    sen_ids = [s["sen_id"] for s in data["sentences"]]
    assert sen_ids == list(range(len(sen_ids)))
    per_video: dict[str, list[str]] = {}
    for s in data["sentences"]:
        assert set(s) == {"caption", "video_id", "sen_id"} and s["caption"] == s["caption"].lower()
        per_video.setdefault(s["video_id"], []).append(s["caption"])
    assert set(per_video) == {v["video_id"] for v in videos}
    assert all(3 <= len(c) <= 5 and len(set(c)) == len(c) for c in per_video.values())

    header7, rows7 = _csv(data_root / "MSRVTT_train.7k.csv")
    header9, rows9 = _csv(data_root / "MSRVTT_train.9k.csv")
    header_t, rows_t = _csv(data_root / "MSRVTT_JSFUSION_test.csv")
    assert header7 == header9 == ["video_id"] and header_t == ["key", "vid_key", "video_id", "sentence"]
    assert [r[0] for r in rows7] == [f"video{i}" for i in range(24)]
    train9, test = {r[0] for r in rows9}, [r[2] for r in rows_t]
    assert len(test) == 8 and not train9 & set(test) and train9 | set(test) == set(per_video)
    for k, (key, vid_key, video_id, sentence) in enumerate(rows_t):
        assert key == f"ret{k}" and vid_key == "msr" + video_id.removeprefix("video")
        assert videos[int(vid_key[3:])]["split"] == "test" and sentence == per_video[video_id][0]


def test_qa_layout(data_root: Path) -> None:
    splits = {"train_qa.json": "train", "val_qa.json": "validate", "test_qa.json": "test"}
    attrs = json.loads((data_root / "synthetic_attributes.json").read_text())
    ids = []
    for name, split in splits.items():
        rows = json.loads((data_root / "msrvtt_qa" / name).read_text())
        assert rows
        for q in rows:
            assert set(q) == {"question", "answer", "video_id", "id", "category_id"}
            assert isinstance(q["video_id"], int) and q["category_id"] in (0, 2)
            assert " " not in q["answer"] and q["question"].endswith("?")
            assert attrs[f"video{q['video_id']}"]["split"] == split
            ids.append(q["id"])
        answers = {q["answer"] for q in rows}
        assert answers & set(COLOURS) and answers & set(SHAPE_WORDS) and answers & set(DIRECTIONS)
    assert len(set(ids)) == len(ids)
    for key in ("colour", "shape", "direction", "background", "num_frames"):
        assert key in attrs["video0"]


def test_videos_decode(data_root: Path) -> None:
    attrs = json.loads((data_root / "synthetic_attributes.json").read_text())
    for i in range(NUM_VIDEOS):
        frames = _frames(data_root, i)
        assert frames.shape == (attrs[f"video{i}"]["num_frames"], 64, 64, 3)
        assert 12 <= frames.shape[0] <= 20


def test_every_combination_in_each_split() -> None:
    combos = _balanced_combos([96, 5, 100], np.random.default_rng(0))
    assert len(set(combos[:96])) == 96 and len(set(combos[101:])) == 96


def test_deterministic_for_seed(data_root: Path, tmp_path: Path) -> None:
    same = generate_synthetic(tmp_path / "same", seed=0, **SMALL)
    other = generate_synthetic(tmp_path / "other", seed=1, **SMALL)
    for name in ANNOTATIONS:
        assert (same / name).read_bytes() == (data_root / name).read_bytes(), name
    assert (other / "MSRVTT_data.json").read_bytes() != (data_root / "MSRVTT_data.json").read_bytes()
    np.testing.assert_array_equal(_frames(same, 3), _frames(data_root, 3))
    a, b = _frames(other, 3), _frames(data_root, 3)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_cache_and_regeneration(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path, seed=0, **SMALL)
    video = root / "videos" / "all" / "video0.mp4"
    stamp = video.stat().st_mtime_ns
    assert generate_synthetic(tmp_path, seed=0, **{**SMALL, "show_progress": True}) == root
    assert video.stat().st_mtime_ns == stamp
    generate_synthetic(tmp_path, seed=0, **{**SMALL, "num_train": 20})
    assert video.stat().st_mtime_ns != stamp
    assert json.loads((root / MARKER).read_text())["num_train"] == 20
    assert not (root / "videos" / "all" / f"video{NUM_VIDEOS - 1}.mp4").exists()  # stale clips removed
    assert len(json.loads((root / "MSRVTT_data.json").read_text())["videos"]) == NUM_VIDEOS - 4
    (root / MARKER).unlink()  # an interrupted run (no marker) is regenerated
    generate_synthetic(tmp_path, seed=0, **{**SMALL, "num_train": 20})
    assert (root / MARKER).exists()


def test_concurrent_callers_generate_once(tmp_path: Path) -> None:
    """Every rank may call the generator: the lock makes the others wait, then reuse the result."""
    with ThreadPoolExecutor(2) as pool:
        roots = list(pool.map(lambda _: generate_synthetic(tmp_path, seed=0, **SMALL), range(2)))
    assert roots == [tmp_path, tmp_path]
    assert json.loads((tmp_path / MARKER).read_text())["num_train"] == 24
    assert not list(tmp_path.rglob("*.part"))
    assert len(json.loads((tmp_path / "MSRVTT_data.json").read_text())["videos"]) == NUM_VIDEOS


def test_invalid_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_synthetic(tmp_path, size=63, **SMALL)
    with pytest.raises(ValueError):
        generate_synthetic(tmp_path, **{**SMALL, "num_retrieval_test": 13})


def _mean_colour_at(frame: np.ndarray, centre: list[float], radius: float) -> np.ndarray:
    """Mean RGB of a disc of 0.3 * radius around the centre: inside every shape, never off-frame."""
    size = frame.shape[0]
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    disc = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= (0.3 * radius) ** 2
    return frame[disc].astype(np.float64).mean(axis=0)


def test_object_colour_and_motion_match_attributes(data_root: Path) -> None:
    attrs = json.loads((data_root / "synthetic_attributes.json").read_text())
    palette = np.array(list(COLOURS.values()), np.float64)
    for i in range(NUM_VIDEOS):
        a = attrs[f"video{i}"]
        frames = _frames(data_root, i).astype(np.float64)
        for frame, centre in ((frames[0], a["start"]), (frames[-1], a["end"])):
            mean = _mean_colour_at(frame, centre, a["radius"])
            assert np.abs(mean - a["rgb"]).max() < 25, (i, mean, a["rgb"])
            assert list(COLOURS)[int(np.argmin(((palette - mean) ** 2).sum(1)))] == a["colour"]
        centroids = []
        for frame in (frames[0], frames[-1]):
            ys, xs = np.nonzero(((frame - a["rgb"]) ** 2).sum(-1) < 50**2)  # the object's colour mask
            centroids.append(np.array([xs.mean(), ys.mean()]))
        shift = (centroids[1] - centroids[0]) / 64  # (dx, dy) in frame fractions
        dx, dy = DIRECTIONS[a["direction"]]
        along, across = (shift[0] * dx, shift[1]) if dx else (shift[1] * dy, shift[0])
        assert along > 0.25 and abs(across) < 0.1, (i, a["direction"], shift)
