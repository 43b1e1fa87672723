import math

import pytest
import torch
import torch.nn.functional as F

from multitask.emcl import EMCL
from tasks import build_task
from tasks.retrieval import RetrievalHead, blockwise_similarity, info_nce, retrieval_report


def test_head_without_emcl_is_cosine():
    text, frames, mask = torch.randn(3, 8), torch.randn(4, 2, 8), torch.ones(4, 2, dtype=torch.long)
    sim = RetrievalHead(None)(text, frames, mask)
    expected = F.normalize(text, dim=-1) @ F.normalize(frames.mean(1), dim=-1).t()
    assert torch.allclose(sim, expected, atol=1e-6)


def test_head_with_emcl_runs_on_stacked_video_then_text_rows():
    text, frames, mask = torch.randn(3, 8), torch.randn(4, 2, 8), torch.ones(4, 2, dtype=torch.long)
    emcl = EMCL(num_bases=4).eval()
    out = emcl(torch.cat([frames.mean(1), text]))
    expected = F.normalize(out[4:], dim=-1) @ F.normalize(out[:4], dim=-1).t()
    assert torch.allclose(RetrievalHead(emcl)(text, frames, mask), expected, atol=1e-6)


def test_text_conditioned_head_uses_a_times_b_plus_a_rows():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape)
            return x

    sim = RetrievalHead(Spy(), pooling="text_conditioned")(torch.randn(3, 8), torch.randn(5, 4, 8),
                                                           torch.ones(5, 4, dtype=torch.long))
    assert sim.shape == (3, 5) and seen == [torch.Size([3 * 5 + 3, 8])]


def test_blockwise_equals_full_without_emcl():
    head = RetrievalHead(None)
    text, frames, mask = torch.randn(7, 8), torch.randn(5, 3, 8), torch.ones(5, 3, dtype=torch.long)
    assert torch.allclose(blockwise_similarity(head, text, frames, mask, 2), head(text, frames, mask), atol=1e-6)


def test_info_nce_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert info_nce(logits).item() == pytest.approx(expected, abs=1e-6)


def test_report_names_and_probes():
    sim = torch.eye(4) + 0.01 * torch.arange(4.0)
    attrs = [{"colour": c, "shape": "disc", "direction": "up"} for c in ("red", "blue", "red", "blue")]
    report = retrieval_report(sim, [1, 1, 1, 1], True, attrs)
    for prefix in ("t2v", "v2t", "t2v_is", "v2t_is"):
        assert report[f"{prefix}/R@1"] == 100.0 and report[f"{prefix}/MdR"] == 1.0
    assert report["probe/colour"] == 100.0 and math.isnan(report["probe/shape"])
    multi = retrieval_report(torch.randn(5, 2), [3, 2])
    assert set(multi) == {f"{d}/{k}" for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")}


def test_task_forward_loss_terms_and_emcl_switch(tiny_root):
    from multitask.data.registry import build_data

    data_cfg = dict(name="msrvtt", root=str(tiny_root), seed=0, num_frames=4, image_size=64, max_words=16,
                    on_bad_video="error")
    model_cfg = dict(clip="emcl-tiny", temporal="spacetime", temporal_layers=1, temporal_width=32, pooling="mean",
                     emcl=dict(enabled=True, num_bases=8, iters=3, momentum=0.9, sigma=1.0, beta=3.0))
    data = build_data("retrieval", data_cfg, show_progress=False)
    batch = torch.utils.data.default_collate([data.train[i] for i in range(4)])
    task = build_task({"task": {"name": "retrieval"}, "model": model_cfg, "data": data_cfg})
    out = task(batch)
    assert set(out) == {"loss", "contrastive_loss"} and out["loss"].requires_grad
    out["loss"].backward()
    assert task.backbone.clip.visual.conv1.weight.grad is not None
    model_cfg["emcl"]["enabled"] = False
    assert build_task({"task": {"name": "retrieval"}, "model": model_cfg, "data": data_cfg}).head.emcl is None
    with pytest.raises(ValueError, match="known: retrieval"):
        build_task({"task": {"name": "segmentation"}, "model": model_cfg, "data": data_cfg})


def test_batched_blocks_equal_one_call_per_block():
    torch.manual_seed(0)
    head = RetrievalHead(EMCL(num_bases=4).eval())
    text, frames = torch.randn(11, 8), torch.randn(7, 3, 8)
    mask = torch.ones(7, 3, dtype=torch.long)
    mask[2, 1:] = 0
    expected = torch.cat([torch.cat([head(text[i: i + 4], frames[j: j + 4], mask[j: j + 4]) for j in (0, 4)], dim=1)
                          for i in (0, 4, 8)])  # blocks of 4: uneven last blocks on both sides
    assert torch.allclose(blockwise_similarity(head, text, frames, mask, 4), expected, atol=1e-6)
    pooled = (frames * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    from tasks.retrieval import _batched_blocks
    assert torch.allclose(_batched_blocks(head, text, pooled, 4, budget=1), expected, atol=1e-6)  # one pair a call
