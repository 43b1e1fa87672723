"""The text-video scorer (multitask/similarity.py): pooling, the EMCL bridge, blockwise evaluation."""
import math

import pytest
import torch
import torch.nn.functional as F

from multitask import similarity
from multitask.emcl import EMCL
from multitask.similarity import VideoTextScorer, info_nce


def scorer(emcl=None, pooling="mean", compat=False) -> VideoTextScorer:
    return VideoTextScorer(emcl, pooling, reference_compat=compat)


def test_scorer_without_emcl_is_cosine():
    text, frames, mask = torch.randn(3, 8), torch.randn(4, 2, 8), torch.ones(4, 2, dtype=torch.long)
    expected = F.normalize(text, dim=-1) @ F.normalize(frames.mean(1), dim=-1).t()
    assert torch.allclose(scorer()(text, frames, mask), expected, atol=1e-6)


def test_scorer_with_emcl_runs_on_stacked_video_then_text_rows():
    text, frames, mask = torch.randn(3, 8), torch.randn(4, 2, 8), torch.ones(4, 2, dtype=torch.long)
    emcl = EMCL(num_bases=4).eval()
    out = emcl(torch.cat([frames.mean(1), text]))
    expected = F.normalize(out[4:], dim=-1) @ F.normalize(out[:4], dim=-1).t()
    assert torch.allclose(scorer(emcl)(text, frames, mask), expected, atol=1e-6)


def test_text_conditioned_scorer_uses_a_times_b_plus_a_rows():
    seen = []

    class Spy(EMCL):
        def forward(self, x):
            seen.append(x.shape)
            return x

    sim = scorer(Spy(), "text_conditioned")(torch.randn(3, 8), torch.randn(5, 4, 8), torch.ones(5, 4, dtype=torch.long))
    assert sim.shape == (3, 5) and seen == [torch.Size([3 * 5 + 3, 8])]


def test_blockwise_equals_full_without_emcl():
    head = scorer()
    text, frames, mask = torch.randn(7, 8), torch.randn(5, 3, 8), torch.ones(5, 3, dtype=torch.long)
    assert torch.allclose(head.blockwise(text, frames, mask, 2), head(text, frames, mask), atol=1e-6)


def test_info_nce_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert info_nce(logits).item() == pytest.approx(expected, abs=1e-6)


def test_batched_blocks_equal_one_call_per_block(monkeypatch):
    torch.manual_seed(0)
    head = scorer(EMCL(num_bases=4).eval())
    text, frames = torch.randn(11, 8), torch.randn(7, 3, 8)
    mask = torch.ones(7, 3, dtype=torch.long)
    mask[2, 1:] = 0
    expected = torch.cat([torch.cat([head(text[i: i + 4], frames[j: j + 4], mask[j: j + 4]) for j in (0, 4)], dim=1)
                          for i in (0, 4, 8)])  # blocks of 4: uneven last blocks on both sides
    # batched and single matmuls round differently and nine EM iterations amplify that to ~2e-5;
    # a wrong pairing of blocks would be off by ~0.1
    assert torch.allclose(head.blockwise(text, frames, mask, 4), expected, atol=1e-4)
    monkeypatch.setattr(similarity, "EMCL_BUDGET", 1)  # one pair a call
    assert torch.allclose(head.blockwise(text, frames, mask, 4), expected, atol=1e-4)


def test_compat_mean_pooling_normalises_frames_first():
    frames, mask = torch.tensor([[[3.0, 0.0], [0.0, 1.0], [5.0, 5.0]]]), torch.tensor([[1, 1, 0]])
    assert torch.equal(scorer().mean_pool(frames, mask), torch.tensor([[1.5, 0.5]]))
    assert torch.equal(scorer(compat=True).mean_pool(frames, mask), torch.tensor([[0.5, 0.5]]))
