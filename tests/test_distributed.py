"""One process with global batch B == two gloo processes with B/2 each (DESIGN.md section 8)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks import build_task

CFG = {"task": {"name": "retrieval"},
       "data": {"max_words": 16, "num_frames": 4},
       "model": {"clip": "emcl-tiny", "temporal": "spacetime", "temporal_layers": 1, "temporal_width": 32,
                 "emcl": {"enabled": True, "num_bases": 8, "iters": 5, "momentum": 0.9, "sigma": 1.0, "beta": 3.0}}}
WORDS = ["red", "blue", "green", "disc", "box", "star", "left", "up"]


def global_batch(size: int = 8) -> dict:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(size, 4, dtype=torch.long)
    mask[1, 3:] = 0
    mask[6, 2:] = 0
    texts = [f"a {WORDS[i % 3]} {WORDS[3 + i % 3]} moves {WORDS[6 + i % 2]} {i}" for i in range(size)]
    return {"video": torch.randn(size, 4, 3, 64, 64, generator=g), "video_mask": mask, "text": texts}


def step(rank: int, world: int, pooling: str) -> dict:
    """Forward and backward on this rank's slice; gradients averaged as DDP does."""
    torch.manual_seed(0)
    cfg = {**CFG, "model": {**CFG["model"], "pooling": pooling}}
    task = build_task(cfg).train()
    batch, per = global_batch(), 8 // world
    local = {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}
    out = task(local)
    out["loss"].backward()
    grads = torch.cat([p.grad.flatten() for p in task.parameters() if p.grad is not None])
    if world > 1:
        dist.all_reduce(grads)
        grads /= world
    return {"loss": out["loss"].detach(), "grads": grads, "mean": task.head.emcl.mean.clone()}


def _worker(rank: int, world: int, init: str, out: str, pooling: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    result = step(rank, world, pooling)
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.parametrize("pooling", ["mean", "text_conditioned"])
def test_two_processes_match_one(pooling, tmp_path: Path):
    single = step(0, 1, pooling)
    init = tempfile.mktemp(dir=tmp_path)
    mp.spawn(_worker, args=(2, init, str(tmp_path / "out"), pooling), nprocs=2, join=True)
    for rank in range(2):
        double = torch.load(tmp_path / f"out.{rank}")
        assert torch.allclose(double["loss"], single["loss"], atol=1e-5)
        assert torch.allclose(double["grads"], single["grads"], atol=1e-5, rtol=1e-4)
        assert torch.allclose(double["mean"], single["mean"], atol=1e-6)  # identical EMCL mean on every rank
