"""Chaos: a two-process run that skips damaged videos, killed with SIGKILL at three random points and resumed
each time, ends with the parameters, metrics and evaluation of the uninterrupted run (slow: ~3 minutes)."""
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file


def launch(tiny_copy: Path, out: Path, train_ids: list[str]) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            str(REPO / "train.py"), "task=retrieval", "data=msrvtt", f"data.root={tiny_copy}", "data.num_frames=4",
            "data.image_size=32", "data.decoder=fake_decoders", "data.on_bad_video=skip", "trainer.batch_size=8",
            "trainer.max_steps=12", "trainer.save_every=1", "trainer.log_every=1", "trainer.num_workers=0",
            "eval.batch_size=16", "eval.block_size=16", "resume=auto", f"output_dir={out}"]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once, and wait until they are gone."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)


@pytest.mark.slow
def test_killed_and_resumed_run_ends_as_the_uninterrupted_one(tiny_copy, tmp_path):
    with open(tiny_copy / "MSRVTT_train.9k.csv") as f:
        train_ids = [line.strip() for line in f.readlines()[1:]]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"),
           "EMCL_FAKE_BAD": f"{train_ids[5]}=load:fail,{train_ids[17]}=load:fail"}
    start = time.monotonic()
    whole = subprocess.run(launch(tiny_copy, tmp_path / "whole", train_ids), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    duration = time.monotonic() - start
    rng = random.Random(7)
    for attempt in range(3):  # SIGKILL at a random point of what a run takes
        proc = subprocess.Popen(launch(tiny_copy, tmp_path / "chaos", train_ids), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.3, 0.9) * duration)
        if attempt == 0:  # the launcher alone (as the OOM killer would): its workers must not train on
            workers = psutil.Process(proc.pid).children(recursive=True)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            assert not psutil.wait_procs(workers, timeout=30)[1], "workers outlived their launcher"
        else:
            kill_tree(proc.pid)
    final = subprocess.run(launch(tiny_copy, tmp_path / "chaos", train_ids), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    for name in ("metrics.jsonl", "skipped_videos.json"):
        assert (tmp_path / "chaos" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    a, b = (load_file(str(tmp_path / run / "checkpoints" / "last" / "model.safetensors")) for run in ("whole", "chaos"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    metrics = [json.loads((tmp_path / run / "eval.json").read_text())["metrics"] for run in ("whole", "chaos")]
    assert metrics[0] == pytest.approx(metrics[1], abs=1e-6)
    skipped = json.loads((tmp_path / "whole" / "skipped_videos.json").read_text())["while_training"]
    assert {Path(p).stem for p in skipped} == {train_ids[5], train_ids[17]}
