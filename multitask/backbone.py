"""open_clip towers, temporal modules, frame pooling and pretrained-weight loading."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import open_clip
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from multitask.errors import ConfigError
from multitask.pretrained import ClipWeights, load_clip_weights, read_clip_weights
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

    def __init__(self, clip: str, pretrained: str | None, temporal: str, temporal_layers: int, temporal_width: int,
                 pooling: str, quick_gelu: bool | None, reference_compat: bool, freeze_backbone: bool,
                 max_words: int, num_frames: int, image_size: int, chunks: int) -> None:
        super().__init__()
        if chunks < 1:
            raise ConfigError(f"trainer.contrastive_chunks must be >= 1, got {chunks}")
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown model.pooling {pooling!r}; known: {', '.join(POOLINGS)}")
        known = open_clip.list_models()
        if clip not in known:
            raise ConfigError(f"unknown model.clip {clip!r}; open_clip knows: {', '.join(known)}")
        weights = read_clip_weights(clip, pretrained) if pretrained else None
        self.quick_gelu = choose_quick_gelu(clip, quick_gelu, weights)
        with _root_warnings_silenced():  # open_clip warns "no pretrained weights" even when we load them next
            self.clip = open_clip.create_model(clip, pretrained=None, force_context_length=max_words,
                                               force_image_size=image_size, quick_gelu=self.quick_gelu)
        if weights is not None:
            load_clip_weights(self.clip, weights)
        else:
            logger.info("model.clip=%s initialised randomly (model.pretrained is null)", clip)
        self.tokenizer = open_clip.get_tokenizer(clip, context_length=max_words)
        self.pooling, self.max_words, self.chunks = pooling, max_words, chunks
        self.freeze_backbone, self.reference_compat = freeze_backbone, reference_compat
        if freeze_backbone:  # towers fixed (features may come from scripts/cache_features.py); logit scale learns
            for name, p in self.clip.named_parameters():
                p.requires_grad_(name == "logit_scale")
        if reference_compat:  # the reference never trains the patch embedding
            self.clip.visual.conv1.requires_grad_(False)
        self.clip.visual.output_tokens = temporal == "spacetime"
        positions = weights.state.get("positional_embedding") if weights is not None else None
        self.temporal = build_temporal(temporal, clip=self.clip, layers=temporal_layers, width=temporal_width,
                                       num_frames=num_frames, quick_gelu=self.quick_gelu, text_positions=positions)

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.shape[1]

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)  # (B, max_words)

    def encode_strings(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (B, D) features: tokenised, on this backbone's device, through the text tower."""
        return self.encode_text(self.tokenize(texts).to(self.device))

    def _chunked(self, fn: Callable[..., torch.Tensor], *batch: torch.Tensor) -> torch.Tensor:
        """``fn(*batch)``; in training with ``chunks`` > 1, over that many slices of the batch, each under
        activation checkpointing: the loss still sees the whole batch's features, but the backward recomputes
        one slice's activations at a time (gradient caching), so encoder memory is one slice's."""
        if self.chunks == 1 or not (self.training and torch.is_grad_enabled()):
            return fn(*batch)
        slices = zip(*(x.tensor_split(self.chunks) for x in batch))
        return torch.cat([checkpoint(fn, *part, use_reentrant=False) for part in slices if len(part[0])])

    def train(self, mode: bool = True) -> VideoTextBackbone:
        """Frozen towers stay in eval mode (no dropout) while the rest trains."""
        super().train(mode)
        if self.freeze_backbone:
            self.clip.eval()
        return self

    def _towers(self) -> contextlib.AbstractContextManager:
        return torch.no_grad() if self.freeze_backbone else contextlib.nullcontext()

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        with self._towers():
            return self._chunked(self.clip.encode_text, tokens)  # (B, D)

    def encode_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, L) -> every position's feature (B, L, D): the text tower without its end-token pooling
        (what the reference EMCL-QA network pools with learned weights)."""
        with self._towers():
            return self._chunked(self._text_tokens, tokens)

    def _text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        x = clip.token_embedding(tokens) + clip.positional_embedding  # (B, L, W)
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
        projection = clip.text_projection
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection  # (B, L, D)

    def frame_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """What the image tower gives the temporal module, flat per frame: images (N, 3, H, W) ->
        (N, D) pooled features, or (N, D + P*W) with the patch tokens when the temporal module reads them.
        This is what scripts/cache_features.py stores."""
        out = self.clip.visual(images)  # (N, D) or ((N, D), (N, P, W))
        if not isinstance(out, tuple):
            return out
        return torch.cat([out[0], out[1].flatten(1)], dim=1)

    def encode_frames(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """video: frames (B, T, 3, H, W), or the image tower's cached ``frame_outputs`` (B, T, F);
        mask: (B, T) -> (B, T, D)."""
        return self._chunked(self._encode_frames, video, mask)

    def _encode_frames(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        if video.dim() == 5:
            with self._towers():
                video = self.frame_outputs(video.flatten(0, 1)).view(b, t, -1)  # (B, T, F)
        elif not self.freeze_backbone:
            raise ConfigError("cached frame features (data.feature_cache) need model.freeze_backbone=true: "
                             "the image tower cannot learn from stored outputs")
        d = self.embed_dim
        frames = video[..., :d]  # (B, T, D)
        tokens = video[..., d:].unflatten(-1, (-1, self.clip.visual.transformer.width)) if video.shape[-1] > d else None
        return self.temporal(frames.float(), mask, tokens)  # tokens: (B, T, P, W) or None

    def encode_video(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, D) with mean pooling."""
        return masked_mean(self.encode_frames(video, mask), mask)

    def logit_scale(self) -> torch.Tensor:
        """The learnable inverse temperature, clamped at 100 as CLIP does (the reference does not clamp)."""
        scale = self.clip.logit_scale.exp()
        return scale if self.reference_compat else scale.clamp(max=100.0)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """CLIP parameters (trained at ``lr_backbone``); everything else uses ``lr``."""
        return [p for n, p in self.clip.named_parameters() if n != "logit_scale"]


def choose_quick_gelu(clip: str, requested: bool | None, weights: ClipWeights | None) -> bool:
    """The towers' activation: ``model.quick_gelu`` when set, else what the weights were trained with, else the
    architecture's own (open_clip's ``-quickgelu`` names). Overriding what the weights say gets a warning."""
    trained = weights.quick_gelu if weights is not None else None
    if requested is None:
        return bool(open_clip.get_model_config(clip).get("quick_gelu", False)) if trained is None else trained
    if trained is not None and requested != trained:
        logger.warning("model.quick_gelu=%s, but %s was trained with %s: the towers will compute a different "
                       "network from the one these weights were trained as", requested, weights.source,
                       "QuickGELU" if trained else "GELU")
    return bool(requested)


def text_token_mask(tokens: torch.Tensor) -> torch.Tensor:
    """tokens: (B, L) from CLIP's tokenizer -> (B, L) long, 1 up to and including the end token (the highest
    id, so the first maximum), 0 on the padding after it (padding is id 0, which is also a real word piece)."""
    end = tokens.argmax(dim=-1, keepdim=True)  # (B, 1)
    return (torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0) <= end).long()


def text_conditioned_pool(text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                          temperature: float = 3.0, renormalise: bool = True) -> torch.Tensor:
    """The reference's pooling: one video feature per (text, video) pair.

    text: (A, D), frames: (B, T, D), mask: (B, T) -> (A, B, D) with frame weights
    softmax(text . frame / temperature) over the real frames. ``renormalise=False`` is the reference's
    arithmetic: the softmax runs over all T frames, padding included, and is then masked, so padded
    frames still take weight from the real ones.
    """
    weights = torch.einsum("ad,btd->abt", text, frames) / temperature  # (A, B, T)
    keep = mask.unsqueeze(0).to(weights.dtype)  # (1, B, T)
    if renormalise:
        weights = weights.masked_fill(keep == 0, float("-inf")).softmax(dim=-1)
    else:
        weights = weights.softmax(dim=-1) * keep
    return torch.einsum("abt,btd->abd", weights, frames)


def build_backbone(model_cfg: dict, data_cfg: dict, chunks: int) -> VideoTextBackbone:
    """The ``model`` group (less ``emcl`` and ``init_from``, which the engine reads) as constructor arguments,
    with the frame and text sizes of the ``data`` group and ``trainer.contrastive_chunks``."""
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("emcl", "init_from")}
    return VideoTextBackbone(**kwargs, max_words=data_cfg["max_words"], num_frames=data_cfg["num_frames"],
                             image_size=data_cfg["image_size"], chunks=chunks)
