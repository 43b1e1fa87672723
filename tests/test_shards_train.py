"""Training on shards end to end (pre-training with retrieval and captioning heads, resumed mid-stream), and
``model.init_from`` starting other tasks from that checkpoint."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, compose, run_train
from safetensors.torch import load_file, save_file
from test_shards import damaged_copy

from multitask.checkpoint import CheckpointError
from multitask.engine import prepare_data
from multitask.errors import ConfigError
from multitask.init_from import init_weights
from multitask.streaming import stream_steps
from multitask.task import build_task

PRETRAIN = ("task=multi", "task.heads=[retrieval,caption]", "data=shards", "debug=quick", "data.num_frames=8",
            "data.image_size=64", "data.record_samples=true")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "run"
    result = run_train(*PRETRAIN, "trainer.save_every=2", f"data.shards={shards}", f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_pretraining_on_shards_logs_the_stream_and_takes_turns(pretrained):
    records = read_jsonl(pretrained / "metrics.jsonl")
    assert [(r["step"], r["samples"], r["bad_samples"], r["bad_shards"]) for r in records] == [(2, 16, 0, 0),
                                                                                                 (4, 32, 0, 0)]
    assert {"retrieval_contrastive_loss", "caption_caption_loss"} <= set(records[0])  # the heads in turn
    seen = [key for r in read_jsonl(pretrained / "samples_seen.jsonl") for _, _, key in r["samples"]]
    assert len(seen) == len(set(seen)) == 32  # within an epoch, no sample twice
    assert not (pretrained / "eval.json").exists()  # shards have no test split
    meta = json.loads((pretrained / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["stream"]["readers"] == 1 and meta["stream"]["states"]["0"]["batches"] == 4


def test_a_run_resumed_mid_stream_equals_the_uninterrupted_one(pretrained, shards, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(pretrained, out, ignore=shutil.ignore_patterns("step_4"), symlinks=True)
    (out / "checkpoints" / "last").unlink()
    (out / "checkpoints" / "last").symlink_to("step_2")
    result = run_train(*PRETRAIN, "trainer.save_every=2", f"data.shards={shards}", f"output_dir={out}",
                       "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("metrics.jsonl", "samples_seen.jsonl"):
        assert (out / name).read_text() == (pretrained / name).read_text(), name
    weights = [load_file(str(run / "checkpoints" / "step_4" / "model.safetensors")) for run in (out, pretrained)]
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[1])


def test_init_from_loads_what_fits_and_names_the_rest(pretrained, tiny_root, caplog):
    source = load_file(str(pretrained / "checkpoints" / "last" / "model.safetensors"))
    conf = compose("task=caption", f"data.root={tiny_root}")
    caption = build_task(conf, None, assets=pretrained / "checkpoints" / "last")  # its tokenizer
    report = init_weights(caption, pretrained / "checkpoints" / "last")
    assert report["new"] == [] and report["other shape"] == []
    assert any(name.startswith("retrieval:") for name in report["not used"]) or not report["not used"]
    state = caption.state_dict()
    for name, value in source.items():
        own = name.removeprefix("tasks.caption.") if name.startswith("tasks.caption.") else name
        if own in state:
            assert (state[own] == value).all(), name
    other = build_task(compose("task=retrieval", f"data.root={tiny_root}", "model.temporal_width=16"))
    with caplog.at_level("WARNING"):
        report = init_weights(other, pretrained / "checkpoints" / "last")
    assert report["other shape"] and all(n.startswith("backbone.temporal") for n in report["other shape"])
    assert "other shape: backbone.temporal" in caplog.text and "not used: caption:decoder" in caplog.text


def test_init_from_refuses_a_checkpoint_where_nothing_fits(pretrained, tiny_root, tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"task": "retrieval"}))
    save_file({"unrelated.weight": load_file(str(pretrained / "checkpoints" / "last" / "model.safetensors"))[
        "emcl.mean"]}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="nothing in model.init_from"):
        init_weights(build_task(compose("task=retrieval", f"data.root={tiny_root}")), tmp_path)


def test_a_stream_needs_a_step_budget_and_caption_pairs(shards):
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        stream_steps({"max_steps": None})
    with pytest.raises(ConfigError, match="not qa"):
        prepare_data(compose("task=qa", "data=shards", f"data.shards={shards}"), show_progress=False)
    with pytest.raises(ConfigError, match="task.mixing=round_robin"):
        prepare_data(compose("task=multi", "task.heads=[retrieval]", "task.mixing=proportional", "data=shards",
                             f"data.shards={shards}"), show_progress=False)


@pytest.mark.slow
def test_two_processes_on_damaged_shards_resume_and_fine_tune(shards, tiny_root, tmp_path):
    """The pre-training story with two processes and a worker each: damaged members skipped and counted, a run
    resumed from its first checkpoint equal to the uninterrupted one, then fine-tuning from its weights."""
    folder = tmp_path / "damaged"
    folder.mkdir()
    pattern = damaged_copy(shards, folder)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              str(REPO / "train.py"), *PRETRAIN, f"data.shards={pattern}", "trainer.num_workers=1",
              "trainer.max_steps=8", "trainer.save_every=4"]
    runs = {}
    for name in ("full", "resumed"):
        out = tmp_path / name
        if name == "resumed":
            shutil.copytree(runs["full"], out, ignore=shutil.ignore_patterns("step_8"), symlinks=True)
            (out / "checkpoints" / "last").unlink()
            (out / "checkpoints" / "last").symlink_to("step_4")
        result = subprocess.run([*launch, f"output_dir={out}", *(["resume=auto"] if name == "resumed" else [])],
                                cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = out
    records = read_jsonl(runs["full"] / "metrics.jsonl")
    assert records[-1]["samples"] == 64 and records[-1]["bad_shards"] >= 3 and records[-1]["bad_samples"] >= 3
    skipped = [s for r in read_jsonl(runs["full"] / "skipped_samples.jsonl") for s in r["skipped"]]
    assert {"cannot be opened", "missing caption"} <= {s["reason"].split(" (")[0] for s in skipped}
    for name in ("metrics.jsonl", "samples_seen.jsonl", "skipped_samples.jsonl"):
        assert (runs["resumed"] / name).read_text() == (runs["full"] / name).read_text(), name
    epoch0 = [key for r in read_jsonl(runs["full"] / "samples_seen.jsonl") for e, _, key in r["samples"] if e == 0]
    assert len(epoch0) == len(set(epoch0)) == 21  # every usable sample once in epoch 0, over both processes
    fine = run_train("task=caption", "debug=quick", f"data.root={tiny_root}", f"output_dir={tmp_path / 'fine'}",
                     f"model.init_from={runs['full'] / 'checkpoints' / 'last'}")
    assert fine.returncode == 0, fine.stderr[-3000:]
    assert "model.init_from=" in fine.stderr and "CIDEr" in fine.stdout
