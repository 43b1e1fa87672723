"""The user's commands end to end, as subprocesses: train, then evaluate the checkpoint."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GEN, REPO, run_train

from multitask.metrics import retrieval_metrics
from multitask.runlog import read_similarity


@pytest.fixture(scope="module")
def trained(e2e_run):
    return e2e_run("retrieval")


def test_run_directory_contract(trained):
    _, out, result = trained
    assert (out / "config.yaml").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert {"step", "epoch", "lr", "loss", "contrastive_loss"} <= set(records[0])
    report = json.loads((out / "eval.json").read_text())
    assert report["task"] == "retrieval" and report["split"] == "test" and report["num_samples"] == 16
    for key in ("t2v/R@1", "v2t/MnR", "t2v_is/R@10", "v2t_is/MdR", "t2v_dsl/R@1", "v2t_dsl/MnR", "probe/colour",
                "probe/direction"):
        assert key in report["metrics"]
    scores = read_similarity(out / "similarity.safetensors")  # what the metrics were computed from
    assert scores.matrix.shape == (16, 16) and len(scores.text_ids) == 16 and scores.text_ids[0].endswith("#0")
    assert scores.video_ids[:1] == [scores.text_ids[0].split("#")[0]]
    t2v = retrieval_metrics(scores.matrix)
    assert all(t2v[k] == pytest.approx(report["metrics"][f"t2v/{k}"]) for k in t2v)
    assert 0 <= report["metrics"]["t2v/R@1"] <= 100 and 1 <= report["metrics"]["t2v/MnR"] <= 16
    last = out / "checkpoints" / "last"
    assert last.is_symlink() and last.resolve().name == "step_4"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last", "step_2", "step_4"]
    assert "t2v/R@1" in result.stdout  # the metrics table is printed


def test_eval_only_reproduces_final_metrics(trained):
    base, out, _ = trained
    again = base / "eval"
    result = run_train("task=retrieval", "debug=quick", f"data.root={base / 'data'}", GEN, f"output_dir={again}",
                       "eval_only=true", f"checkpoint={out / 'checkpoints' / 'last'}",
                       "model.temporal=transformer")  # the model is the checkpoint's, whatever the command says
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads((out / "eval.json").read_text())["metrics"]
    second = json.loads((again / "eval.json").read_text())["metrics"]
    assert first.keys() == second.keys()
    for key in first:
        assert first[key] == pytest.approx(second[key], abs=1e-9, nan_ok=True), key


def test_bad_checkpoint_and_unknown_group_fail_clearly(trained):
    base, out, _ = trained
    missing = run_train("task=retrieval", "debug=quick", f"data.root={base / 'data'}", GEN,
                        f"output_dir={base / 'x'}", "eval_only=true", f"checkpoint={base / 'nope'}")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    unknown_groups = (("task=segmentation", "retrieval"), ("data=webvid", "msrvtt"), ("model=vit_h99", "vit_b32"))
    for override, known in unknown_groups:
        unknown = run_train(override)
        assert unknown.returncode != 0 and known in unknown.stderr, override


@pytest.mark.parametrize("task", ["retrieval", "caption", "qa"])  # the heads with dropout included
def test_resume_from_mid_epoch_checkpoint_equals_uninterrupted(e2e_run, task):
    import shutil

    from safetensors.torch import load_file

    base, out, _ = e2e_run(task)
    crashed = base / f"crashed-{task}"
    shutil.copytree(out, crashed, symlinks=True)
    shutil.rmtree(crashed / "checkpoints" / "step_4")  # as if the run died after saving step 2 (mid-epoch)
    (crashed / "checkpoints" / "last").unlink()
    (crashed / "eval.json").unlink()
    result = run_train(f"task={task}", "debug=quick", f"data.root={base / 'data'}", GEN, f"output_dir={crashed}",
                       "trainer.save_every=2", "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr
    assert (crashed / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
    full = load_file(str(out / "checkpoints" / "step_4" / "model.safetensors"))
    resumed = load_file(str(crashed / "checkpoints" / "step_4" / "model.safetensors"))
    for name in full:
        assert torch.allclose(full[name], resumed[name], atol=1e-6), name
    assert (crashed / "metrics.jsonl").read_text().count('"step": 4') == 1
    first = json.loads((out / "eval.json").read_text())["metrics"]
    second = json.loads((crashed / "eval.json").read_text())["metrics"]
    for key in first:
        assert first[key] == pytest.approx(second[key], abs=1e-6, nan_ok=True), key


def test_two_process_evaluation_equals_one(trained):
    base, out, _ = trained
    target = base / "eval2"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train.py"),
           "task=retrieval", "debug=quick", f"data.root={base / 'data'}", GEN, f"output_dir={target}",
           "eval_only=true", f"checkpoint={out / 'checkpoints' / 'last'}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((out / "eval.json").read_text())
    two = json.loads((target / "eval.json").read_text())
    assert two["num_samples"] == one["num_samples"] == 16  # every query once, no sampler padding
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


def test_bad_videos_stop_before_training_or_are_skipped(trained, tmp_path):
    import shutil

    base, _, _ = trained
    data = tmp_path / "data"
    shutil.copytree(base / "data", data, ignore=shutil.ignore_patterns(".cache"))
    videos = sorted((data / "videos" / "all").glob("*.mp4"))
    videos[0].unlink()
    videos[1].write_bytes(videos[1].read_bytes()[:200])
    args = ("task=retrieval", "debug=quick", f"data.root={data}", GEN)
    stopped = run_train(*args, f"output_dir={tmp_path / 'err'}")
    assert stopped.returncode != 0
    assert "2 of 68 videos are unusable" in stopped.stderr
    assert f"{videos[0].name}: missing" in stopped.stderr and f"{videos[1].name}: undecodable" in stopped.stderr
    assert not (tmp_path / "err" / "metrics.jsonl").exists()
    skipped = run_train(*args, f"output_dir={tmp_path / 'skip'}", "data.on_bad_video=skip")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    record = json.loads((tmp_path / "skip" / "skipped_videos.json").read_text())
    assert record["count"] == 2 and sorted(Path(p).name for p in record["videos"]) == [videos[0].name, videos[1].name]


def test_non_finite_loss_stops_with_its_step_and_keeps_the_checkpoints(trained, tmp_path):
    base, _, _ = trained
    out = tmp_path / "diverged"
    result = run_train("task=retrieval", "debug=quick", f"data.root={base / 'data'}", GEN, f"output_dir={out}",
                       "trainer.lr=inf", "trainer.warmup_ratio=0", "trainer.save_every=1", "trainer.log_every=1")
    assert result.returncode != 0
    assert "non-finite loss nan at step 2" in result.stderr  # step 1's update made every new weight infinite
    assert (out / "checkpoints" / "last").resolve().name == "step_1"
    assert json.loads((out / "checkpoints" / "step_1" / "meta.json").read_text())["step"] == 1
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert not (out / "eval.json").exists()
