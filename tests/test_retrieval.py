"""The retrieval head: its loss terms, its evaluation report, the registry that builds it."""
import math

import pytest
import torch
from conftest import compose

from multitask.metrics import retrieval_report
from multitask.task import build_task


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

    data_cfg = {**compose("data=msrvtt", "data.root=x")["data"], "root": str(tiny_root), "num_frames": 4,
                "max_words": 16}
    data = build_data("retrieval", data_cfg, show_progress=False)
    batch = torch.utils.data.default_collate([data.train[i] for i in range(4)])
    conf = {**compose("model.emcl.num_bases=8", "model.emcl.iters=3"), "data": data_cfg}
    task = build_task(conf)
    out = task(batch)
    assert set(out) == {"loss", "contrastive_loss"} and out["loss"].requires_grad
    out["loss"].backward()
    assert task.backbone.clip.visual.conv1.weight.grad is not None
    conf["model"]["emcl"]["enabled"] = False
    assert build_task(conf).emcl is None and build_task(conf).scorer.emcl is None
    with pytest.raises(ValueError, match="known: .*retrieval"):
        build_task({**conf, "task": {"name": "segmentation"}})
