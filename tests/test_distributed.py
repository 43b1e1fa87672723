"""One process with global batch B == two gloo processes with B/2 each (docs/architecture.md,
"Distributed semantics"), for every task head: gathered EMCL, and losses normalised by global counts."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import full_config

from multitask.caption_tokenizer import CaptionTokenizer, train_tokenizer
from multitask.emcl import EMCL
from multitask.task import build_task

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


CAPTION = {"name": "caption", "emcl_loss_weight": 0.5, "label_smoothing": 0.1, "num_beams": 1, "max_length": 12,
           "vocab_size": 60, "decoder": {"width": 32, "layers": 1, "heads": 2, "dropout": 0.0}}
QA = {"name": "qa", "num_answers": 3, "emcl_loss_weight": 0.5, "emcl_features_to_classifier": True,
      "classifier": {"proj_dim": 16, "hidden_dim": 32, "dropout": 0.0}}
ANSWERS = ["red", "blue", "zzz", "red", "zzz", "zzz", "green", "blue"]  # "zzz" is outside the vocabulary


class _Rows:
    def __init__(self) -> None:
        self.rows = {"answer": ["red", "blue", "red", "green", "blue", "red"]}


class _Data:
    train = _Rows()


def build(kind: str, tmp: str) -> torch.nn.Module:
    """kind: retrieval-<pooling>, caption or qa; dropout off so every process draws the same."""
    torch.manual_seed(0)
    if kind.startswith("retrieval"):
        return build_task(full_config({**CFG, "model": {**CFG["model"], "pooling": kind.split("-", 1)[1]}}))
    if kind == "caption":
        return build_task(full_config({**CFG, "task": {**CAPTION, "tokenizer": f"{tmp}/tokenizer.model"}}))
    return build_task(full_config({**CFG, "task": QA}), _Data())


def step(rank: int, world: int, kind: str, tmp: str) -> dict:
    """Forward and backward on this rank's slice; gradients averaged as DDP does."""
    task = build(kind, tmp).train()
    batch, per = global_batch(), 8 // world
    batch = {**batch, "question": batch["text"], "answer": ANSWERS}
    local = {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}
    out = task(local)
    out["loss"].backward()
    grads = torch.cat([p.grad.flatten() for p in task.parameters() if p.grad is not None])
    if world > 1:
        dist.all_reduce(grads)
        grads /= world
    emcl = [m for m in task.modules() if isinstance(m, EMCL)][0]
    return {"loss": out["loss"].detach(), "grads": grads, "mean": emcl.mean.clone()}


def _worker(rank: int, world: int, init: str, out: str, kind: str, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    result = step(rank, world, kind, tmp)
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["retrieval-mean", "retrieval-text_conditioned", "caption", "qa"])
def test_two_processes_match_one(kind, tmp_path: Path):
    CaptionTokenizer(train_tokenizer(global_batch()["text"], vocab_size=60)).save(tmp_path / "tokenizer.model")
    single = step(0, 1, kind, str(tmp_path))
    init = tempfile.mktemp(dir=tmp_path)
    mp.spawn(_worker, args=(2, init, str(tmp_path / "out"), kind, str(tmp_path)), nprocs=2, join=True)
    doubles = [torch.load(tmp_path / f"out.{rank}") for rank in range(2)]
    # each rank's loss is its share of the global mean (equal shares for retrieval); metrics.jsonl averages them
    assert torch.allclose((doubles[0]["loss"] + doubles[1]["loss"]) / 2, single["loss"], atol=1e-5)
    for double in doubles:
        assert torch.allclose(double["grads"], single["grads"], atol=1e-5, rtol=1e-4)
        assert torch.allclose(double["mean"], single["mean"], atol=1e-6)  # identical EMCL mean on every rank
