"""The frame cache (scripts/cache_frames.py, data.frame_cache): stored frames give exactly the decoded
clips, datasets read it in training and evaluation, mismatches are refused at build time, builds resume;
and scripts/bench_video.py on tiny sizes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DECODER, TINY, data_config

from multitask.data.frame_cache import MANIFEST, CacheItem, FrameCache, FrameCacheError, build_frame_cache, file_name
from multitask.data.registry import build_data
from multitask.data.synthetic import generate_synthetic
from multitask.video import load_clip
from multitask.video_io import probe_video

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
NUM_FRAMES, IMAGE_SIZE = 10, 32  # the tiny clips have 6-12 frames: some are padded


def run_script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def data_cfg(root: Path, **overrides) -> dict:
    return data_config("msrvtt", root, **{"num_frames": NUM_FRAMES, "image_size": IMAGE_SIZE, "max_words": 16,
                                          **overrides})


@pytest.fixture(scope="module")
def frame_cache(tiny_root, tmp_path_factory) -> Path:
    """Every retrieval and QA video of the tiny set, cached by the script (read-only for tests)."""
    out = tmp_path_factory.mktemp("frames") / "cache"
    result = run_script("cache_frames.py", "--data", "msrvtt", "--root", tiny_root, "--task", "retrieval", "qa",
                        "--out", out, "--num-frames", NUM_FRAMES, "--image-size", IMAGE_SIZE, "--workers", 2)
    assert "68 videos written, 0 already cached, 0 bad" in result.stdout
    return out


def items(root: Path, ids: list[str], max_seconds: float | None = None) -> list[CacheItem]:
    paths = [str(root / "videos" / "all" / f"{v}.mp4") for v in ids]
    return [CacheItem(v, p, probe_video(p), max_seconds) for v, p in zip(ids, paths)]


@pytest.mark.parametrize("max_seconds", [None, 0.5])
def test_cached_clips_equal_decoded_ones(tiny_root, tmp_path, max_seconds):
    todo = items(tiny_root, [f"video{i}" for i in range(12)], max_seconds)
    written, bad = build_frame_cache(tmp_path, todo, NUM_FRAMES, IMAGE_SIZE, DECODER, show_progress=False)
    assert (written, bad) == (12, {})
    cache = FrameCache(tmp_path, NUM_FRAMES, IMAGE_SIZE, rebuild="")
    real = []
    for item in todo:
        video, mask = cache.load(item.video_id, item.info)
        want_video, want_mask = load_clip(item.path, item.info, NUM_FRAMES, IMAGE_SIZE, rng=None,
                                          max_seconds=max_seconds)
        assert torch.equal(video, want_video) and torch.equal(mask, want_mask)
        real.append(int(mask.sum()))
    if max_seconds is None:
        assert min(real) < NUM_FRAMES == max(real)  # padded clips and full ones
    else:
        assert set(real) == {4}  # 0.5 s at 8 fps: the window, padded to NUM_FRAMES


def test_file_names_are_safe_and_distinct():
    names = {file_name(v) for v in ["a/b", "a_b", "../x", "10000000@N00_x.", "a b"]}
    assert len(names) == 5 and not any("/" in n or n.startswith(".") for n in names)


def test_datasets_read_the_cache(tiny_root, frame_cache):
    plain = build_data("retrieval", data_cfg(tiny_root), show_progress=False)
    cached = build_data("retrieval", data_cfg(tiny_root, frame_cache=str(frame_cache)), show_progress=False)
    assert cached.train.stored is not None and cached.test.stored is not None
    for i in range(len(plain.test)):  # evaluation: identical items
        a, b = plain.test[i], cached.test[i]
        assert a["text"] == b["text"] and torch.equal(a["video"], b["video"])
        assert torch.equal(a["video_mask"], b["video_mask"])
    item, decoded = cached.train[5], plain.train[5]  # training: same caption draw, segment-centre frames
    path = plain.train.path_of(plain.train.rows[5]["video_id"])
    centre, _ = load_clip(path, plain.train.infos[path], NUM_FRAMES, IMAGE_SIZE, rng=None)
    assert item["text"] == decoded["text"] and torch.equal(item["video"], centre)


def test_qa_videos_read_the_cache(tiny_root, frame_cache):
    plain = build_data("qa", data_cfg(tiny_root), show_progress=False).test.videos()
    cached = build_data("qa", data_cfg(tiny_root, frame_cache=str(frame_cache)), show_progress=False).test.videos()
    assert cached.stored is not None and len(cached) == len(plain)
    for i in range(len(plain)):
        assert torch.equal(plain[i]["video"], cached[i]["video"])


def test_mismatches_are_refused_naming_the_command(tiny_root, frame_cache, tmp_path):
    with pytest.raises(FrameCacheError, match=r"num_frames=10, the run has data.num_frames=8.*cache_frames.py"):
        build_data("retrieval", data_cfg(tiny_root, num_frames=8, frame_cache=str(frame_cache)), show_progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(frame_cache, partial)
    manifest = json.loads((partial / MANIFEST).read_text())
    del manifest["videos"]["video3"]
    (partial / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FrameCacheError, match=r"lacks 1 videos.*video3.*python scripts/cache_frames.py --data msrvtt "
                                              r"--task retrieval"):
        build_data("retrieval", data_cfg(tiny_root, frame_cache=str(partial)), show_progress=False)
    with pytest.raises(FrameCacheError, match="holds no manifest.json.*cache_frames.py"):
        build_data("retrieval", data_cfg(tiny_root, frame_cache=str(tmp_path / "none")), show_progress=False)
    with pytest.raises(ValueError, match="data.augment=true cannot be used with data.frame_cache"):
        build_data("retrieval", data_cfg(tiny_root, augment=True, frame_cache=str(frame_cache)), show_progress=False)


def test_didemo_window_and_odd_ids(tmp_path):
    root = generate_synthetic(tmp_path / "didemo", seed=0, show_progress=False, layout="didemo", **TINY)
    cfg = {**data_cfg(root, name="didemo"), "frame_cache": str(tmp_path / "cache")}
    plain = build_data("retrieval", {**cfg, "frame_cache": None}, show_progress=False)
    splits = (plain.train, plain.test)
    todo = [CacheItem(v, s.path_of(v), s.infos[s.path_of(v)], seconds) for s in splits
            for v, seconds in zip(s.rows["video_id"], s.rows["max_seconds"])]
    assert {item.max_seconds for item in todo} == {30.0} and any("@" in item.video_id for item in todo)
    whole = [CacheItem(item.video_id, item.path, item.info) for item in todo]
    build_frame_cache(tmp_path / "cache", whole, NUM_FRAMES, IMAGE_SIZE, DECODER, show_progress=False)  # no window
    with pytest.raises(FrameCacheError, match="another max_seconds window.*cache_frames.py --data didemo"):
        build_data("retrieval", cfg, show_progress=False)
    written, _ = build_frame_cache(tmp_path / "cache", todo, NUM_FRAMES, IMAGE_SIZE, DECODER, show_progress=False)
    assert written == len(todo)  # a cached video with another window is redone
    cached = build_data("retrieval", cfg, show_progress=False)
    for i in range(len(plain.test)):
        assert torch.equal(plain.test[i]["video"], cached.test[i]["video"])


def test_build_resumes(tiny_root, tmp_path):
    todo = items(tiny_root, [f"video{i}" for i in range(6)])
    assert build_frame_cache(tmp_path, todo, NUM_FRAMES, IMAGE_SIZE, DECODER, show_progress=False) == (6, {})
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")}
    assert build_frame_cache(tmp_path, todo, NUM_FRAMES, IMAGE_SIZE, DECODER, show_progress=False) == (0, {})
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")} == stamps
    (tmp_path / file_name("video2")).unlink()  # an interrupted build, or a lost file: redone alone
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    bad_item = CacheItem("broken", str(broken), todo[0].info)
    written, bad = build_frame_cache(tmp_path, [*todo, bad_item], NUM_FRAMES, IMAGE_SIZE, DECODER, show_progress=False)
    assert written == 1 and list(bad) == ["broken"]
    with pytest.raises(FrameCacheError, match="use another --out"):
        build_frame_cache(tmp_path, todo, NUM_FRAMES, 48, DECODER, show_progress=False)


def test_bench_video_quick_json(tmp_path):
    out = tmp_path / "bench.json"
    run_script("bench_video.py", "--clips", 2, "--rounds", 1, "--frames", 24, "--size", 64, "--num-frames", 4,
               "--image-size", 32, "--json", out, env={"EMCL_CACHE": str(tmp_path / "cache")})
    result = json.loads(out.read_text())
    rates = result["clips_per_second"]
    assert set(rates) == {"decode-all", "loader", "loader, in process", "frame cache"}
    assert result["loader_vs_decode_all"] == pytest.approx(rates["loader"] / rates["decode-all"])
    assert result["cache_vs_decode"] == pytest.approx(rates["frame cache"] / rates["loader"])
    assert result["isolation_cost"] == pytest.approx(rates["loader, in process"] / rates["loader"])
