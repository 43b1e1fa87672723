"""Stored image-tower outputs, to train the temporal module, EMCL and the heads on a frozen backbone
(``model.freeze_backbone=true data.feature_cache=DIR``) without decoding video or running the tower.

``scripts/cache_features.py`` writes under DIR the stored-clips layout (multitask/data/frame_cache.py)
with other arrays: per video the (t, F) float16 tower outputs of its segment-centre frames, F as
``VideoTextBackbone.frame_outputs`` gives it (D pooled features, plus P*W patch-token values when the
temporal module reads them); the manifest adds the model name, a fingerprint of its weights and F.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from multitask.data.frame_cache import FrameCacheError, StoredClips, save_array
from multitask.video import pad_frames
from multitask.video_io import VideoInfo

REBUILD = "python scripts/cache_features.py DIR <the run's model and data overrides>"


class FeatureCacheError(FrameCacheError):
    """A feature cache made with other CLIP weights than the run's."""


def tower_fingerprint(backbone: nn.Module) -> str:
    """sha1 of the CLIP weights (both towers: text features must come from the same model)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(backbone.clip.state_dict().items()):
        if name != "logit_scale":
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache(StoredClips):
    """Read side: ``load(video_id, info)`` -> (features (num_frames, F) float32, zero-padded; mask)."""

    kind, key = "feature cache", "feature_cache"

    def __init__(self, root: str, num_frames: int, image_size: int, rebuild: str = REBUILD) -> None:
        super().__init__(root, num_frames, image_size, rebuild)

    def check_model(self, backbone: nn.Module) -> None:
        """The run's CLIP weights must be the ones the features were made with."""
        if tower_fingerprint(backbone) != self.manifest["fingerprint"]:
            raise FeatureCacheError(f"feature cache {self.root} was made with other CLIP weights than this run's "
                                    f"(model.clip / model.pretrained); rebuild it with: {self.rebuild}")

    def load(self, video_id: str, info: VideoInfo) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.from_numpy(np.load(self.root / self.videos[video_id]["file"]).astype(np.float32))  # (t, F)
        return pad_frames(features, self.num_frames)


def open_feature_cache(cfg: dict, task: str) -> FeatureCache:
    return FeatureCache(cfg["feature_cache"], cfg["num_frames"], cfg["image_size"])


def save_features(root, video_id: str, features: torch.Tensor, max_seconds: float | None) -> dict:
    """Write one video's real frames' (t, F) features as float16; returns its manifest entry."""
    name = save_array(root, video_id, features.to(torch.float16).numpy())
    return {"file": name, "frames": int(features.shape[0]), "max_seconds": max_seconds}
