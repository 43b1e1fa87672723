"""open_clip towers, temporal modules, frame pooling and pretrained-weight loading."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import open_clip
import torch
from torch import nn

from multitask.pretrained import load_clip_weights
from multitask.temporal import build_temporal

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

POOLINGS = ("mean", "text_conditioned")


@contextlib.contextmanager
def _root_warnings_silenced() -> Iterator[None]:
    """Raise the root logger (where open_clip logs) to ERROR for the duration."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x: (B, T, D), mask: (B, T) -> (B, D) mean over the real frames."""
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class VideoTextBackbone(nn.Module):
    """A CLIP image and text tower from open_clip plus a temporal module over frames.

    Video: frames (B, T, 3, H, W) -> per-frame features (B, T, D) after the temporal module;
    ``pool`` reduces them to (B, D) by masked mean. Text: token ids (B, L) -> (B, D).
    """

    def __init__(self, clip: str = "emcl-tiny", pretrained: str | None = None, temporal: str = "mean",
                 temporal_layers: int = 4, temporal_width: int = 128, pooling: str = "mean",
                 max_words: int = 32, num_frames: int = 12, image_size: int | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown model.pooling {pooling!r}; known: {', '.join(POOLINGS)}")
        known = open_clip.list_models()
        if clip not in known:
            raise ValueError(f"unknown model.clip {clip!r}; open_clip knows: {', '.join(known)}")
        with _root_warnings_silenced():  # open_clip warns "no pretrained weights" even when we load them next
            self.clip = open_clip.create_model(clip, pretrained=None, force_context_length=max_words,
                                               force_image_size=image_size)  # position embeddings resized to fit
        if pretrained:
            load_clip_weights(self.clip, clip, pretrained)
        else:
            logger.info("model.clip=%s initialised randomly (model.pretrained is null)", clip)
        self.tokenizer = open_clip.get_tokenizer(clip, context_length=max_words)
        self.pooling, self.max_words = pooling, max_words
        self.clip.visual.output_tokens = temporal == "spacetime"
        self.temporal = build_temporal(temporal, clip=self.clip, layers=temporal_layers, width=temporal_width,
                                       num_frames=num_frames)

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.shape[1]

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)  # (B, max_words)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)  # (B, D)

    def encode_frames(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """video: (B, T, 3, H, W), mask: (B, T) -> (B, T, D)."""
        b, t = video.shape[:2]
        out = self.clip.visual(video.flatten(0, 1))  # (B*T, D) or ((B*T, D), (B*T, P, W))
        pooled, tokens = out if isinstance(out, tuple) else (out, None)
        frames = pooled.view(b, t, -1)  # (B, T, D)
        tokens = tokens.view(b, t, *tokens.shape[1:]) if tokens is not None else None  # (B, T, P, W)
        return self.temporal(frames, mask, tokens)

    def encode_video(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, D) with mean pooling."""
        return masked_mean(self.encode_frames(video, mask), mask)

    def logit_scale(self) -> torch.Tensor:
        """The learnable inverse temperature, clamped at 100 as CLIP does."""
        return self.clip.logit_scale.exp().clamp(max=100.0)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """CLIP parameters (trained at ``lr_backbone``); everything else uses ``lr``."""
        return [p for n, p in self.clip.named_parameters() if n != "logit_scale"]


def text_conditioned_pool(text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                          temperature: float = 3.0) -> torch.Tensor:
    """The reference's pooling: one video feature per (text, video) pair.

    text: (A, D), frames: (B, T, D), mask: (B, T) -> (A, B, D) with frame weights
    softmax(text . frame / temperature) over the real frames.
    """
    weights = torch.einsum("ad,btd->abt", text, frames) / temperature  # (A, B, T)
    weights = weights.masked_fill(mask.unsqueeze(0) == 0, float("-inf")).softmax(dim=-1)
    return torch.einsum("abt,btd->abd", weights, frames)


def build_backbone(model_cfg: dict, data_cfg: dict) -> VideoTextBackbone:
    """Map the ``model`` and ``data`` config groups to constructor arguments."""
    return VideoTextBackbone(clip=model_cfg["clip"], pretrained=model_cfg.get("pretrained"),
                             temporal=model_cfg.get("temporal", "mean"),
                             temporal_layers=model_cfg.get("temporal_layers", 4),
                             temporal_width=model_cfg.get("temporal_width", 128),
                             pooling=model_cfg.get("pooling", "mean"), max_words=data_cfg["max_words"],
                             num_frames=data_cfg["num_frames"], image_size=data_cfg.get("image_size"))
