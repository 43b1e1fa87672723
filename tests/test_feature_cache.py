"""Frozen backbone on stored tower outputs (model.freeze_backbone, scripts/cache_features.py,
data.feature_cache): the stored features are the tower's, training on them leaves the towers untouched,
and mismatched caches are refused with a message naming the fix."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GEN, REPO, compose, run_train
from datasets import Dataset
from safetensors.torch import load_file

from multitask.backbone import build_backbone
from multitask.data.feature_cache import FeatureCache, FeatureCacheError
from multitask.data.frame_cache import FrameCacheError
from multitask.engine import check_feature_cache
from multitask.video import load_clip
from multitask.video_io import probe_video

MODEL = {**compose()["model"], "freeze_backbone": True}  # the tiny model: spacetime readout, mean pooling
DATA = {"max_words": 32, "num_frames": 4, "image_size": 32}
SETTINGS = ["data.num_frames=4", "data.image_size=32", "model.freeze_backbone=true"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> dict:
    """A tiny set, CLIP weights written here, its features cached, and a debug=quick run trained on them."""
    base = tmp_path_factory.mktemp("features")
    torch.manual_seed(3)
    weights = base / "clip.pt"
    torch.save(build_backbone({**MODEL, "freeze_backbone": False}, DATA, 1).clip.state_dict(), weights)
    common = [f"data.root={base / 'data'}", GEN, f"model.pretrained={weights}", *SETTINGS]
    cmd = [sys.executable, str(REPO / "scripts" / "cache_features.py"), str(base / "cache"), *common]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    run = run_train("debug=quick", *common, f"data.feature_cache={base / 'cache'}", f"output_dir={base / 'run'}")
    assert run.returncode == 0, run.stderr[-3000:]
    return {"base": base, "weights": weights, "first": first, "again": again, "common": common}


def test_stored_features_are_the_towers_outputs(cached):
    base = cached["base"]
    backbone = build_backbone({**MODEL, "pretrained": str(cached["weights"])}, DATA, 1).eval()
    cache = FeatureCache(base / "cache", num_frames=4, image_size=32)
    for video_id in ["video0", "video7"]:
        path = str(base / "data" / "videos" / "all" / f"{video_id}.mp4")
        video, mask = load_clip(path, probe_video(path), 4, 32)
        with torch.no_grad():
            expected = backbone.frame_outputs(video)  # (T, F)
        features, cached_mask = cache.load(video_id, probe_video(path))
        real = mask.bool()
        assert torch.equal(cached_mask, mask) and not features[~real].any()  # padded frames: zeros, masked
        assert torch.allclose(features[real], expected[real], atol=2e-3 * expected.abs().max())  # float16


def test_rerun_skips_cached_videos(cached):
    first = [line for line in cached["first"].stdout.splitlines() if "to do" in line][0]
    assert first.startswith("0 videos already cached")
    todo = int(first.split(", ")[1].split()[0])
    assert f"{todo} videos already cached, 0 to do" in cached["again"].stdout


def test_training_on_features_leaves_the_towers_untouched(cached):
    run = cached["base"] / "run"
    assert json.loads((run / "eval.json").read_text())["metrics"]["t2v/R@1"] >= 0
    trained = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    original = torch.load(cached["weights"], weights_only=True)
    for name in ("visual.conv1.weight", "text_projection", "transformer.resblocks.0.mlp.c_fc.weight"):
        assert torch.equal(trained[f"backbone.clip.{name}"], original[name])
    assert trained["backbone.temporal.proj_out.weight"].abs().sum() > 0  # zero-initialised, then trained


def conf(cache: Path, weights: Path, **model) -> dict:
    return {"data": {**DATA, "feature_cache": str(cache)}, "model": {**MODEL, "pretrained": str(weights), **model}}


class _Task(torch.nn.Module):
    def __init__(self, backbone) -> None:
        super().__init__()
        self.backbone = backbone


def test_mismatched_caches_are_refused(cached, tmp_path):
    base, weights = cached["base"], cached["weights"]
    with pytest.raises(ValueError, match="needs model.freeze_backbone=true"):
        check_feature_cache(conf(base / "cache", weights, freeze_backbone=False), None)
    other = _Task(build_backbone(MODEL, DATA, 1))  # random weights, not the cached ones
    with pytest.raises(FeatureCacheError, match="other CLIP weights.*cache_features.py"):
        check_feature_cache(conf(base / "cache", weights), other)
    with pytest.raises(FrameCacheError, match="num_frames=4, the run has data.num_frames=8.*cache_features.py"):
        FeatureCache(base / "cache", num_frames=8, image_size=32)
    partial = tmp_path / "partial"
    shutil.copytree(base / "cache", partial)
    manifest = json.loads((partial / "manifest.json").read_text())
    del manifest["videos"]["video3"]
    (partial / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FrameCacheError, match="lacks 1 videos.*video3"):
        rows = Dataset.from_dict({"video_id": ["video1", "video3"]})
        FeatureCache(partial, num_frames=4, image_size=32).check_rows(rows)
    result = run_train("debug=quick", *cached["common"], f"data.feature_cache={partial}",
                       f"output_dir={tmp_path / 'run'}")
    assert result.returncode != 0 and "lacks" in result.stderr and "cache_features.py" in result.stderr
