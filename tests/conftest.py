"""Shared fixtures: one tiny generated MSR-VTT-layout dataset per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from multitask.data.synthetic import generate_synthetic

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
