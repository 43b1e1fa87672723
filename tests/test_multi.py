"""task=multi: batch mixing, shared backbone and EMCL, per-head evaluation, one checkpoint for every tool."""
import json
from collections import Counter

import numpy as np
import pytest
from conftest import GEN, run_train

import multitask
from multitask.data.sampler import MixedBatchSampler


def test_mixed_batches_are_single_task_deterministic_and_proportional():
    sampler = MixedBatchSampler([400, 100, 1600], batch_size=10, seed=3, mixing="proportional", temperature=1.0)
    assert len(sampler) == 40 + 10 + 160
    sampler.sampler.set_epoch(1)
    batches = list(sampler)
    assert batches == list(sampler)  # a function of (seed, epoch) only
    parts = [{0 if i < 400 else 1 if i < 500 else 2 for i in b} for b in batches]
    assert all(len(p) == 1 for p in parts) and all(len(b) == 10 for b in batches)
    counts = Counter(p.pop() for p in parts)
    expected = np.array([400, 100, 1600]) / 2100 * len(batches)
    assert all(abs(counts[i] - expected[i]) < 4 * np.sqrt(expected[i]) + 1 for i in range(3))
    sampler.sampler.set_epoch(2)
    assert list(sampler) != batches
    flat = MixedBatchSampler([400, 100, 1600], 10, 3, "proportional", temperature=1e9).probabilities()
    assert np.allclose(flat, 1 / 3, atol=1e-6)


def test_round_robin_and_bad_settings():
    sampler = MixedBatchSampler([30, 20], batch_size=10, seed=0, mixing="round_robin")
    tasks = [0 if b[0] < 30 else 1 for b in sampler]
    assert tasks == [0, 1, 0, 1, 0]  # the smaller set's permutation is drawn again when used up
    with pytest.raises(ValueError, match="known: proportional, round_robin"):
        MixedBatchSampler([30], 10, 0, "random")
    with pytest.raises(ValueError, match="at least trainer.batch_size=10"):
        MixedBatchSampler([30, 5], 10, 0)


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("multi")
    result = run_train("task=multi", "debug=quick", f"data.root={base / 'data'}", GEN, f"output_dir={base / 'run'}",
                       "trainer.max_steps=6", "trainer.log_every=3", "task.mixing=round_robin")
    assert result.returncode == 0, result.stderr[-3000:]
    return base


def test_every_head_trains_and_is_evaluated(multi_run):
    records = [json.loads(line) for line in (multi_run / "run" / "metrics.jsonl").read_text().splitlines()]
    terms = set().union(*records)
    assert {"retrieval_contrastive_loss", "caption_caption_loss", "caption_contrastive_loss", "qa_answer_loss",
            "qa_contrastive_loss"} <= terms  # round robin: every head within 6 steps
    report = json.loads((multi_run / "run" / "eval.json").read_text())
    assert {"retrieval/t2v/R@1", "caption/CIDEr", "caption/METEOR", "qa/accuracy"} <= set(report["metrics"])
    assert report["num_samples"] == 16 + 24 + 96  # retrieval queries, caption videos, QA questions
    checkpoint = multi_run / "run" / "checkpoints" / "last"
    assert (checkpoint / "tokenizer.model").is_file() and (checkpoint / "answers.json").is_file()


def test_single_task_evaluators_and_tools_load_the_multi_checkpoint(multi_run):
    checkpoint = multi_run / "run" / "checkpoints" / "last"
    multi = json.loads((multi_run / "run" / "eval.json").read_text())["metrics"]
    for task in ("caption", "qa"):
        out = multi_run / f"eval-{task}"
        result = run_train(f"task={task}", "debug=quick", f"data.root={multi_run / 'data'}", GEN, f"output_dir={out}",
                           "eval_only=true", f"checkpoint={checkpoint}")
        assert result.returncode == 0, result.stderr[-3000:]
        single = json.loads((out / "eval.json").read_text())["metrics"]
        assert single == pytest.approx({k.split("/", 1)[1]: v for k, v in multi.items() if k.startswith(task + "/")},
                                       abs=1e-9)
    model = multitask.load(checkpoint)
    predictions = json.loads((multi_run / "run" / "predictions.json").read_text())
    captions = [p for p in predictions if p["task"] == "caption"]  # the 24 test clips in evaluation order
    clips = [str(multi_run / "data" / "videos" / "all" / f"{p['image_id']}.mp4") for p in captions]
    assert model.caption(clips) == [p["caption"] for p in captions]  # same blocks of videos through EMCL
    question = next(p for p in predictions if p["task"] == "qa")
    clip = multi_run / "data" / "videos" / "all" / f"{question['video_id']}.mp4"
    assert model.answer(str(clip), question["question"]) == question["prediction"]


def test_plot_run_draws_curves_and_the_emcl_projection(multi_run):
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_run.py"), str(multi_run / "run"),
                             "--videos", "3"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("curves.png", "emcl_projection.png"):
        png = (multi_run / "run" / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
