"""Temporal modules: turn per-frame CLIP features into per-frame video features (B, T, D).

Registry ``TEMPORAL``:
- ``mean``: identity (pooling then averages the frames: the paper's meanP);
- ``transformer``: the reference's seqTransf, a transformer over the frame embeddings with frame
  position embeddings and a residual, initialised from the first CLIP text blocks;
- ``transformer_projected``: the same with a linear layer on the transformer's output before the
  residual (the reference EMCL-QA network's ``mean_proj``);
- ``spacetime``: a position-specific readout of every frame's final patch tokens, added to each
  frame embedding. Its output layer starts at zero, so it begins as plain mean pooling (compatible
  with pretrained CLIP) and learns motion, which per-frame CLS features cannot see.
"""
from __future__ import annotations

import logging

import torch
from open_clip.transformer import QuickGELU, Transformer
from torch import nn

from multitask.errors import ConfigError

logger = logging.getLogger(__name__)


class MeanTemporal(nn.Module):
    def forward(self, frames: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        return frames  # (B, T, D)


def padding_attn_mask(mask: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """mask: (B, T) with 1 for real frames -> additive attention mask (B*heads, T, T)."""
    blocked = (mask == 0).unsqueeze(1).expand(-1, mask.shape[1], -1)  # (B, T, T): key is padding
    additive = torch.zeros(blocked.shape, dtype=dtype, device=mask.device).masked_fill(blocked, -1e4)
    return additive.repeat_interleave(heads, dim=0)


class TransformerTemporal(nn.Module):
    """Frame transformer of the reference network (seqTransf). Its blocks start as copies of the CLIP text
    tower's, so they use the text tower's activation (QuickGELU for OpenAI-trained CLIPs)."""

    def __init__(self, width: int, layers: int, heads: int, max_frames: int = 128, quick_gelu: bool = False,
                 projected: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.frame_position = nn.Embedding(max_frames, width)
        nn.init.normal_(self.frame_position.weight, std=0.01)  # the scale of CLIP's text positions
        self.transformer = Transformer(width=width, layers=layers, heads=heads,
                                       act_layer=QuickGELU if quick_gelu else nn.GELU)
        self.out_proj = nn.Linear(width, width) if projected else nn.Identity()

    def init_from_clip_text(self, clip: nn.Module, text_positions: torch.Tensor | None = None) -> None:
        """Copy the first text blocks and text position embeddings, as the reference does. ``text_positions``:
        all rows of the pretrained weights (the text tower keeps only ``max_words`` of them)."""
        text = getattr(clip, "transformer", None)
        ours = self.transformer
        if text is None or text.width != ours.width or len(text.resblocks) < len(ours.resblocks):
            logger.info("temporal transformer: no matching CLIP text blocks, random initialisation")
            return
        for ours, theirs in zip(self.transformer.resblocks, text.resblocks):
            ours.load_state_dict(theirs.state_dict())
        positions = clip.positional_embedding if text_positions is None else text_positions
        rows = min(self.frame_position.num_embeddings, positions.shape[0])
        with torch.no_grad():
            self.frame_position.weight[:rows] = positions[:rows]

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(frames.shape[1], device=frames.device)
        x = frames + self.frame_position(positions).unsqueeze(0)  # (B, T, D)
        x = self.transformer(x, attn_mask=padding_attn_mask(mask, self.heads, x.dtype))
        return self.out_proj(x) + frames  # (B, T, D)


class SpaceTimeTemporal(nn.Module):
    """A position-specific linear readout of every frame's patch tokens, added to every frame.

    Each token is projected to ``width`` channels, the (frame, patch, channel) grid is flattened,
    normalised and mapped to the embedding. Where an object is at which time is then a linear
    function of the tokens, so motion direction is directly readable; a prototype transformer
    that mean-pooled attended tokens did not learn direction on the synthetic set in 300 steps.
    """

    def __init__(self, token_width: int, embed_dim: int, width: int, num_patches: int, num_frames: int) -> None:
        super().__init__()
        self.num_frames, self.num_patches = num_frames, num_patches
        self.down = nn.Linear(token_width, width)
        self.norm = nn.LayerNorm(num_frames * num_patches * width)
        self.proj_out = nn.Linear(num_frames * num_patches * width, embed_dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        if tokens is None:
            raise ConfigError("spacetime temporal module needs the patch tokens of every frame")
        if tokens.shape[1:3] != (self.num_frames, self.num_patches):
            raise ConfigError(f"spacetime temporal module was built for {self.num_frames} frames x "
                             f"{self.num_patches} patches, got {tuple(tokens.shape[1:3])}")
        x = self.down(tokens) * mask.to(tokens.dtype)[:, :, None, None]  # (B, T, P, W), padding zeroed
        return frames + self.proj_out(self.norm(x.flatten(1))).unsqueeze(1)  # (B, T, D)


def _mean(clip: nn.Module, layers: int, width: int, num_frames: int, quick_gelu: bool,
          text_positions: torch.Tensor | None) -> nn.Module:
    return MeanTemporal()


def _transformer(clip: nn.Module, layers: int, width: int, num_frames: int, quick_gelu: bool,
                 text_positions: torch.Tensor | None, projected: bool = False) -> nn.Module:
    dim = clip.text_projection.shape[1]
    module = TransformerTemporal(width=dim, layers=layers, heads=max(1, dim // 64), max_frames=max(128, num_frames),
                                 quick_gelu=quick_gelu, projected=projected)
    module.init_from_clip_text(clip, text_positions)
    return module


def _transformer_projected(clip: nn.Module, layers: int, width: int, num_frames: int, quick_gelu: bool,
                           text_positions: torch.Tensor | None) -> nn.Module:
    return _transformer(clip, layers, width, num_frames, quick_gelu, text_positions, projected=True)


def _spacetime(clip: nn.Module, layers: int, width: int, num_frames: int, quick_gelu: bool,
               text_positions: torch.Tensor | None) -> nn.Module:
    visual = clip.visual
    grid = visual.grid_size
    return SpaceTimeTemporal(token_width=visual.transformer.width, embed_dim=clip.text_projection.shape[1],
                             width=width, num_patches=grid[0] * grid[1], num_frames=num_frames)


TEMPORAL = {"mean": _mean, "transformer": _transformer, "transformer_projected": _transformer_projected,
            "spacetime": _spacetime}


def build_temporal(name: str, clip: nn.Module, layers: int, width: int, num_frames: int, quick_gelu: bool = False,
                   text_positions: torch.Tensor | None = None) -> nn.Module:
    if name not in TEMPORAL:
        raise ConfigError(f"unknown model.temporal {name!r}; known: {', '.join(TEMPORAL)}")
    return TEMPORAL[name](clip, layers, width, num_frames, quick_gelu, text_positions)
