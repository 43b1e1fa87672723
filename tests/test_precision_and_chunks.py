"""Gradient caching (``trainer.contrastive_chunks``) gives the unchunked step's loss and gradients, and
bf16 and fp16 autocast keep the EM iterations and the similarity matrices in float32."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_distributed import ANSWERS, build, global_batch, step

from multitask.caption_tokenizer import CaptionTokenizer, train_tokenizer
from multitask.emcl import EMCL
from multitask.engine import make_accelerator
from multitask.losses import paired_emcl
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emcl_and_similarity_stay_float32_under_autocast(dtype):
    g = torch.Generator().manual_seed(0)
    text, frames = torch.randn(6, 16, generator=g), torch.randn(5, 3, 16, generator=g)
    mask = torch.ones(5, 3, dtype=torch.long)
    head = VideoTextScorer(EMCL(num_bases=4).eval(), "mean", reference_compat=False)
    reference = head(text, frames, mask)
    with torch.autocast("cpu", dtype=dtype):
        assert (text @ text.t()).dtype == dtype  # autocast is on for plain matmuls here
        mixed = head(text.to(dtype), frames.to(dtype), mask)
    assert mixed.dtype == torch.float32
    # only the rounding of the inputs differs; a bf16 matmul in EM would be ~100x further off
    assert torch.allclose(mixed, reference, atol=2e-2)
    exact = head(text.to(dtype).float(), frames.to(dtype).float(), mask)
    assert torch.allclose(mixed, exact, atol=1e-6)


def test_paired_emcl_reconstructs_half_precision_rows_in_float32():
    """The reference QA network hands EMCL its projections as autocast made them (bf16 / fp16)."""
    g = torch.Generator().manual_seed(0)
    video, text = torch.randn(6, 16, generator=g).half(), torch.randn(6, 16, generator=g).half()

    def emcl() -> EMCL:
        return EMCL(num_bases=4, generator=torch.Generator().manual_seed(1)).train()

    with torch.autocast("cpu", dtype=torch.float16):
        mixed = paired_emcl(emcl(), video, text, torch.tensor(10.0))  # (rec video, rec text, InfoNCE)
    exact = paired_emcl(emcl(), video.float(), text.float(), torch.tensor(10.0))
    assert all(m.dtype == torch.float32 for m in mixed)
    assert all(torch.allclose(m, e, atol=1e-6) for m, e in zip(mixed, exact))


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


@pytest.mark.parametrize("kind", ["retrieval-text_conditioned", "caption"])  # QA's EMCL: paired_emcl, above
def test_fp16_training_step_with_loss_scaling(kind, tokenizer_dir):
    """fp16 as Accelerate runs it on a GPU (autocast and a GradScaler; on the CPU Accelerate runs fp16 as
    float32, see below), here with torch's CPU fp16 autocast: the towers run in fp16, EMCL in float32."""
    float_run = step(0, 1, kind, tokenizer_dir)
    task = build(kind, tokenizer_dir).train()
    towers, emcl = [], []
    task.backbone.clip.visual.conv1.register_forward_hook(lambda module, args, out: towers.append(out.dtype))
    task.emcl.register_forward_hook(lambda module, args, out: emcl.append(out.dtype))
    scaler, optimizer = torch.amp.GradScaler("cpu"), torch.optim.SGD(task.parameters(), lr=0.0)
    batch = {**global_batch(), "question": global_batch()["text"], "answer": ANSWERS}
    with torch.autocast("cpu", dtype=torch.float16):
        loss = task(batch)["loss"]
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = torch.cat([p.grad.flatten() for p in task.parameters() if p.grad is not None])
    assert towers == [torch.float16] and emcl == [torch.float32]
    assert loss.dtype == torch.float32 and torch.isfinite(grads).all()
    assert abs(float(loss.detach()) - float(float_run["loss"])) < 0.05 * float(float_run["loss"])
    assert torch.allclose(grads, float_run["grads"], atol=0.05 * float(float_run["grads"].abs().max()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="Accelerate's fp16 on the CPU")
def test_fp16_on_the_cpu_runs_float32_and_says_so(caplog):
    accelerator = make_accelerator({"mixed_precision": "fp16", "grad_accum": 1})
    assert accelerator.scaler is None and not accelerator.native_amp  # no autocast, no loss scaling
    assert "fp16 does nothing on the CPU" in caplog.text


@pytest.mark.parametrize("setting, launcher, expected", [(None, "bf16", "bf16"), ("no", "bf16", "no"),
                                                         (None, None, "no")])
def test_mixed_precision_null_defers_to_accelerate_launch(setting, launcher, expected, monkeypatch):
    if launcher:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)  # what accelerate launch exports
    else:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert make_accelerator({"mixed_precision": setting, "grad_accum": 1}).mixed_precision == expected
