"""Every config group option composes, and the values code relies on have the right types (a stray edit
once left ``num_frames: mkv`` in configs/data/activitynet.yaml)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO

CONFIGS = REPO / "configs"
OPTIONS = [f"{group}={path.stem}" for group in ("data", "model", "task", "experiment")
           for path in sorted((CONFIGS / group).glob("*.yaml"))]


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes_with_typed_values(option):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[option, "data.root=/data"] if option.startswith("data=") else [option])
    conf = OmegaConf.to_container(cfg, resolve=True)
    for key in ("num_frames", "image_size", "max_words"):
        assert isinstance(conf["data"][key], int) and conf["data"][key] > 0, (option, key, conf["data"][key])
    for key in ("batch_size", "max_epochs", "num_workers", "contrastive_chunks"):
        assert isinstance(conf["trainer"][key], int), (option, key)
    assert isinstance(conf["model"]["freeze_backbone"], bool)
    assert conf["data"]["frame_cache"] is None and conf["data"]["feature_cache"] is None
