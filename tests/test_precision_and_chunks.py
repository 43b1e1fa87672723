"""Gradient caching (``trainer.contrastive_chunks``) gives the unchunked step's loss and gradients, and
bf16 autocast keeps the EM iterations and the similarity matrices in float32."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_distributed import ANSWERS, build, global_batch, step

from multitask.caption_tokenizer import CaptionTokenizer, train_tokenizer
from multitask.emcl import EMCL
from multitask.engine import make_accelerator
from multitask.similarity import VideoTextScorer


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> str:
    CaptionTokenizer(train_tokenizer(global_batch()["text"], vocab_size=60)).save(tmp_path / "tokenizer.model")
    return str(tmp_path)


@pytest.mark.parametrize("kind", ["retrieval-mean", "retrieval-text_conditioned", "caption", "qa"])
def test_chunked_step_equals_unchunked(kind, tokenizer_dir, monkeypatch):
    whole = step(0, 1, kind, tokenizer_dir)
    built = build

    def chunked(kind_: str, tmp: str) -> torch.nn.Module:
        task = built(kind_, tmp)
        task.backbone.chunks = 3  # 8 rows in slices of 3, 3, 2
        return task

    monkeypatch.setattr("test_distributed.build", chunked)
    sliced = step(0, 1, kind, tokenizer_dir)
    assert torch.allclose(sliced["loss"], whole["loss"], atol=1e-6)
    assert torch.allclose(sliced["grads"], whole["grads"], atol=1e-6, rtol=1e-5)
    assert torch.allclose(sliced["mean"], whole["mean"], atol=1e-6)


def test_chunks_apply_only_when_training_with_gradient():
    task = build("retrieval-mean", "")
    task.backbone.chunks = 4
    calls = []
    task.backbone.clip.encode_text = lambda tokens: calls.append(len(tokens)) or torch.zeros(len(tokens), 8)
    tokens = torch.zeros(8, 16, dtype=torch.long)
    task.backbone.train().encode_text(tokens)
    with torch.no_grad():
        task.backbone.encode_text(tokens)
    task.backbone.eval().encode_text(tokens)
    assert calls == [2, 2, 2, 2, 8, 8]


def test_bad_chunk_count_is_refused():
    from conftest import compose

    from multitask.backbone import build_backbone

    TINY = compose()["model"]
    with pytest.raises(ValueError, match="contrastive_chunks must be >= 1"):
        build_backbone(TINY, {"max_words": 16, "num_frames": 4, "image_size": 64}, chunks=0)


def test_emcl_and_similarity_stay_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    text, frames = torch.randn(6, 16, generator=g), torch.randn(5, 3, 16, generator=g)
    mask = torch.ones(5, 3, dtype=torch.long)
    head = VideoTextScorer(EMCL(num_bases=4).eval(), "mean", reference_compat=False)
    reference = head(text, frames, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (text @ text.t()).dtype == torch.bfloat16  # autocast is on for plain matmuls here
        mixed = head(text.bfloat16(), frames.bfloat16(), mask)
    assert mixed.dtype == torch.float32
    # only the bf16 rounding of the inputs differs; a bf16 matmul in EM would be ~100x further off
    assert torch.allclose(mixed, reference, atol=2e-2)
    exact = head(text.bfloat16().float(), frames.bfloat16().float(), mask)
    assert torch.allclose(mixed, exact, atol=1e-6)


@pytest.mark.parametrize("kind", ["retrieval-mean", "caption", "qa"])
def test_bf16_training_step_through_accelerate(kind, tokenizer_dir):
    accelerator = make_accelerator({"mixed_precision": "bf16", "grad_accum": 1})
    float_run = step(0, 1, kind, tokenizer_dir)
    model = build(kind, tokenizer_dir).train()
    dtypes = []
    model.backbone.clip.visual.conv1.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    task = accelerator.prepare(model)
    batch = {**global_batch(), "question": global_batch()["text"], "answer": ANSWERS}
    out = task(batch)
    accelerator.backward(out["loss"])
    grads = torch.cat([p.grad.flatten() for p in task.parameters() if p.grad is not None])
    assert dtypes == [torch.bfloat16]  # the towers ran in bf16
    assert out["loss"].dtype == torch.float32 and torch.isfinite(grads).all()
    assert abs(float(out["loss"].detach()) - float(float_run["loss"])) < 0.05 * float(float_run["loss"])


@pytest.mark.parametrize("setting, launcher, expected", [(None, "bf16", "bf16"), ("no", "bf16", "no"),
                                                         (None, None, "no")])
def test_mixed_precision_null_defers_to_accelerate_launch(setting, launcher, expected, monkeypatch):
    if launcher:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)  # what accelerate launch exports
    else:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert make_accelerator({"mixed_precision": setting, "grad_accum": 1}).mixed_precision == expected
