"""Shared fixtures: one tiny generated MSR-VTT-layout dataset per test session, quick runs of each task on
it (trained once, shared by the end-to-end, task and tool tests), and composed configs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState
from omegaconf import OmegaConf

from multitask.backbone import VideoTextBackbone
from multitask.data.synthetic import generate_synthetic
from multitask.decoding import DecoderSpec
from multitask.engine import compose_config

TINY = dict(num_train=40, num_val=4, num_test=24, num_retrieval_test=16, min_frames=6, max_frames=12)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the real MSR-VTT layout (read-only for tests: copy to modify)."""
    return generate_synthetic(tmp_path_factory.mktemp("tiny") / "data", seed=0, show_progress=False, **TINY)


@pytest.fixture
def tiny_copy(tiny_root, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may break."""
    target = tmp_path / "data"
    shutil.copytree(tiny_root, target, ignore=shutil.ignore_patterns(".cache"))
    return target


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps one process-wide state; a test that builds an Accelerator must not fix the next
    test's mixed precision."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def compose(*overrides: str) -> dict:
    """The resolved config train.py would run with these overrides (the defaults live in configs/ only)."""
    return compose_config(list(overrides))


def data_config(group: str, root, **overrides) -> dict:
    """The ``data`` group of ``data=<group>`` as composed, at ``root``, with ``overrides``."""
    return {**compose(f"data={group}", "data.root=unset")["data"], "root": str(root), **overrides}


def full_config(partial: dict, *overrides: str) -> dict:
    """``partial`` (nested dicts) merged over the composed config of its ``task.name`` and ``overrides``."""
    name = partial.get("task", {}).get("name", "retrieval")
    return OmegaConf.to_container(OmegaConf.merge(compose(f"task={name}", *overrides), partial))


TINY_BACKBONE = dict(clip="emcl-tiny", pretrained=None, temporal="mean", temporal_layers=1, temporal_width=32,
                     pooling="mean", quick_gelu=None, reference_compat=False, freeze_backbone=False, max_words=16,
                     num_frames=4, image_size=64, chunks=1)


def tiny_backbone(**overrides) -> VideoTextBackbone:
    """A small backbone for unit tests: 4 frames of 64 px, 16 words, mean temporal module and pooling."""
    return VideoTextBackbone(**{**TINY_BACKBONE, **overrides})


DECODER = DecoderSpec("multitask.video_io", 60.0)  # the data configs' decoder and time limit

REPO = Path(__file__).resolve().parents[1]
GEN = "data.generator={num_train:40,num_val:4,num_test:24,num_retrieval_test:16,min_frames:6,max_frames:12}"


def run_train(*overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "train.py"), *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory):
    """``e2e_run(task)`` -> (base, run dir, process): a ``debug=quick`` run of that task (checkpoints at
    steps 2 and 4) on a tiny generated set at ``base / "data"``, trained once per session. Read-only."""
    base = tmp_path_factory.mktemp("e2e")
    runs: dict[str, tuple] = {}

    def get(task: str) -> tuple[Path, Path, subprocess.CompletedProcess]:
        if task not in runs:
            out = base / f"run-{task}"
            result = run_train(f"task={task}", "debug=quick", f"data.root={base / 'data'}", GEN, f"output_dir={out}",
                               "trainer.save_every=2")
            assert result.returncode == 0, result.stderr[-3000:]
            runs[task] = (base, out, result)
        return runs[task]

    return get


SHARD_SIZE = 7  # samples per shard of the ``shards`` fixture


@pytest.fixture(scope="session")
def tiny_train(tiny_root):
    """The tiny set's 52 training clips (the 9k list), 2 frames of 32 px."""
    from multitask.data.registry import build_data

    return build_data("retrieval", data_config("msrvtt", tiny_root, num_frames=2, image_size=32),
                      show_progress=False).train


@pytest.fixture(scope="session")
def shards(tiny_train, tmp_path_factory) -> str:
    """``tiny_train`` as 8 tar shards of up to 7 samples (read-only for tests); the data.shards pattern."""
    from multitask.data.shard_writer import write_shards

    return write_shards(tiny_train, tmp_path_factory.mktemp("shards"), SHARD_SIZE, show_progress=False)
