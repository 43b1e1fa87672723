"""multitask.load and the `multitask` command on trained checkpoints, your own video files and embeddings."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DECODER

import multitask
from multitask.emcl import emcl_similarity
from multitask.metrics import retrieval_metrics
from multitask.search_index import load_index

CLI = [sys.executable, "-m", "multitask.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoints(e2e_run) -> dict:
    out = {task: e2e_run(task)[1] / "checkpoints" / "last" for task in ("retrieval", "caption", "qa")}
    return {**out, "data": e2e_run("retrieval")[0] / "data"}


@pytest.fixture(scope="module")
def clips(checkpoints, tmp_path_factory) -> Path:
    """Six readable clips (two in a subfolder) and one broken file."""
    folder = tmp_path_factory.mktemp("clips")
    (folder / "sub").mkdir()
    for i, name in enumerate(["video44", "video45", "video46", "video47", "sub/video50", "sub/video51"]):
        shutil.copy(checkpoints["data"] / "videos" / "all" / f"{Path(name).name}.mp4", folder / f"{name}.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def test_index_is_resumable_and_search_ranks_like_the_api(checkpoints, clips, tmp_path):
    index = tmp_path / "index"
    first = cli("index", clips, "--checkpoint", checkpoints["retrieval"], "--out", index)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "6 videos added, 0 already indexed, 1 unreadable" in first.stdout and "broken.mp4" in first.stderr
    again = cli("index", clips, "--checkpoint", checkpoints["retrieval"], "--out", index)
    assert "0 videos added, 6 already indexed" in again.stdout
    found = cli("search", index, "a red shape moves to the left", "-k", "3")
    assert found.returncode == 0, found.stderr[-2000:]
    rows = [line.split("\t") for line in found.stdout.strip().splitlines()]
    expected = multitask.load(checkpoints["retrieval"]).search("a red shape moves to the left", 3, index=index)
    assert [(r[1], float(r[2])) for r in rows] == [(v, pytest.approx(s, abs=1e-4)) for v, s in expected]
    assert {r[1] for r in rows} <= {"video44", "video45", "video46", "video47", "sub/video50", "sub/video51"}


def test_caption_and_answer_commands(checkpoints, clips):
    captioned = cli("caption", "--checkpoint", checkpoints["caption"], clips / "video44.mp4", clips / "sub/video50.mp4")
    assert captioned.returncode == 0, captioned.stderr[-2000:]
    assert [line.split("\t")[0] for line in captioned.stdout.strip().splitlines()] == \
        [str(clips / "video44.mp4"), str(clips / "sub/video50.mp4")]
    answered = cli("answer", "--checkpoint", checkpoints["qa"], clips / "video44.mp4", "what colour is the shape?")
    assert answered.returncode == 0, answered.stderr[-2000:]
    assert answered.stdout.strip() in json.loads((checkpoints["qa"] / "answers.json").read_text())
    broken = cli("caption", "--checkpoint", checkpoints["caption"], clips / "broken.mp4", clips / "gone.mp4")
    assert broken.returncode == 2 and "2 of 2 videos cannot be read" in broken.stderr
    assert "gone.mp4: missing" in broken.stderr and "broken.mp4: undecodable" in broken.stderr


def test_api_embeddings_and_wrong_head(checkpoints, clips):
    model = multitask.load(checkpoints["retrieval"])
    videos = model.embed_videos([clips / "video44.mp4", clips / "video45.mp4"])
    texts = model.embed_texts(["a red ball", "a blue box", "a star"])
    assert videos.shape == (2, 128) and texts.shape == (3, 128)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="for task=retrieval, which has no caption head; caption needs a checkpoint"):
        model.caption([clips / "video44.mp4"])
    with pytest.raises(ValueError, match="call build_index"):
        model.search("a red ball", k=2)
    with pytest.raises(ValueError, match="no texts"):
        model.embed_texts([])
    with pytest.raises(ValueError, match="no video paths"):
        model.embed_videos([])
    model.build_index([clips / "video44.mp4", clips / "sub" / "video50.mp4"])
    found = model.search("a red ball", k=5)
    assert sorted(v for v, _ in found) == ["video44", "video50"] and found[0][1] >= found[1][1]


def test_index_goes_on_past_a_file_that_fails_after_the_probe(checkpoints, clips, tmp_path, monkeypatch):
    import multitask.api as api
    from multitask.decoding import DecodeError
    from multitask.search_index import update_index

    real = api.load_clip

    def damaged_in_the_middle(path, *args, **kwargs):
        if path.endswith("video45.mp4"):
            raise DecodeError("RuntimeError: corrupt packet at frame 57")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(api, "load_clip", damaged_in_the_middle)
    model = multitask.load(checkpoints["retrieval"])
    summary = update_index(model.encode_frames, model.pool_frames, str(model.checkpoint), clips, tmp_path / "index",
                           model.decoder, batch_size=4)
    assert summary["added"] == 5 and len(summary["failed"]) == 2
    reason = summary["failed"][str((clips / "video45.mp4").resolve())]
    assert reason == "undecodable while loading (RuntimeError: corrupt packet at frame 57)"
    assert sorted(load_index(tmp_path / "index")[0].ids) == ["sub/video50", "sub/video51", "video44", "video46",
                                                               "video47"]
    with pytest.raises(api.UnreadableVideoError, match="video45.mp4: undecodable while loading"):
        model.embed_videos([clips / "video44.mp4", clips / "video45.mp4"])


def test_emcl_score_writes_scores_and_metrics(tmp_path):
    rng = np.random.default_rng(0)
    video = rng.normal(size=(12, 16)).astype(np.float32)
    text = video + 0.5 * rng.normal(size=(12, 16)).astype(np.float32)
    np.save(tmp_path / "t.npy", text)
    np.save(tmp_path / "v.npy", video)
    result = cli("emcl-score", tmp_path / "t.npy", tmp_path / "v.npy", "--out", tmp_path / "s.npy",
                 "--metrics", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr[-2000:]
    scores = np.load(tmp_path / "s.npy")
    assert np.allclose(scores, emcl_similarity(torch.from_numpy(text), torch.from_numpy(video)).numpy(), atol=1e-6)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["t2v/R@1"] == retrieval_metrics(scores)["R@1"]
    assert metrics["v2t/MnR"] == retrieval_metrics(scores.T)["MnR"]
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    default = cli("emcl-score", tmp_path / "t.npy", tmp_path / "v.npy", "--out", tmp_path / "d.npy")
    assert default.returncode == 0 and json.loads((tmp_path / "d.metrics.json").read_text()) == metrics
    mismatch = cli("emcl-score", tmp_path / "t.npy", tmp_path / "bad.npy", "--out", tmp_path / "x.npy")
    assert mismatch.returncode == 2 and "expected text (T, D) and video (V, D)" in mismatch.stderr


def test_doctor_passes_a_good_dataset_and_lists_every_problem(checkpoints, tmp_path):
    good = cli("doctor", "--data", "msrvtt", "--root", checkpoints["data"])
    assert good.returncode == 0, good.stdout + good.stderr[-2000:]
    assert "no problems found" in good.stdout and "qa: train 160 rows" in good.stdout
    broken = tmp_path / "data"
    shutil.copytree(checkpoints["data"], broken, ignore=shutil.ignore_patterns(".cache"))
    (broken / "videos" / "all" / "video3.mp4").unlink()
    (broken / "videos" / "all" / "video50.mp4").write_bytes(b"\0" * 100)
    nine_k = broken / "MSRVTT_train.9k.csv"
    nine_k.write_text(nine_k.read_text() + "video1\nvideo45\n")  # a duplicate, and a test video in training
    result = cli("doctor", "--data", "msrvtt", "--root", broken)
    assert result.returncode == 1
    out = result.stdout
    assert "retrieval train: 1 ids appear more than once, e.g. video1" in out
    assert "retrieval: 1 videos are in both train and test, e.g. video45" in out
    assert f"video {broken / 'videos' / 'all' / 'video3.mp4'}: missing" in out
    assert f"video {broken / 'videos' / 'all' / 'video50.mp4'}: undecodable" in out


def test_doctor_checks_retrieval_with_the_7k_list_and_reports_every_task(tiny_copy):
    from multitask.doctor import diagnose

    (tiny_copy / "MSRVTT_train.9k.csv").rename(tiny_copy / "MSRVTT_train.7k.csv")
    report = diagnose("msrvtt", tiny_copy, DECODER, show_progress=False)
    assert not report.problems and "no MSRVTT_train.9k.csv: retrieval checked with MSRVTT_train.7k.csv" in report.lines
    (tiny_copy / "msrvtt_qa" / "train_qa.json").write_text('[{"question": "what?", "answer": "x", "video_id": 1, '
                                                           '"id": "not-a-number"}]')
    report = diagnose("msrvtt", tiny_copy, DECODER, show_progress=False)
    assert len(report.problems) == 1 and report.problems[0].startswith("qa: ")
    assert any(line.startswith("caption: train") for line in report.lines)  # the other tasks were still checked
