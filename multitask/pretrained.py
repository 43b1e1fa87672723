"""Loading CLIP weights without the network: a file path, or an open_clip tag from the local cache.

Nothing here downloads. Files load through safetensors or ``torch.load(weights_only=True)``;
OpenAI's TorchScript archives load through ``torch.jit.load`` (no pickled Python objects).

Two facts about OpenAI's weights decide what network they must run in:
- they were trained with QuickGELU (``x * sigmoid(1.702 x)``); open_clip's plain ``ViT-B-32`` config
  uses ``nn.GELU``, so the activation is chosen from the weights (``weights_quick_gelu``);
- their 77 text positions were learned for positions 0-76; a shorter context keeps the first rows
  (interpolating them, as one would image positions, moves every token to a position it never had).
"""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

from multitask.errors import ConfigError, MissingInputError

logger = logging.getLogger(__name__)

OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")  # entries of OpenAI's own state dicts
REFERENCE_PREFIX = "clip."  # EMCL-Net / CLIP4Clip checkpoints hold the CLIP under this prefix


@dataclass
class ClipWeights:
    """A CLIP state dict ready for open_clip, where it came from, and whether it was trained with QuickGELU
    (None: the weights do not say; the architecture's own activation is used)."""
    state: dict[str, torch.Tensor]
    source: str
    quick_gelu: bool | None


def _hub_cached_file(hub_id: str, cache_dir: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename = hub_id.rsplit("/", 1)  # "org/name/file" or "org/name/" (default file names)
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for name in names:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(found, str):
            return found
    return None


def resolve_pretrained(clip: str, pretrained: str, cache_dir: str | None = None) -> Path:
    """Return a local weights file for ``pretrained``: an existing path, or a cached open_clip tag."""
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    cfg = open_clip.get_pretrained_cfg(clip, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(clip)
        raise MissingInputError(f"model.pretrained={pretrained!r} is neither a file nor an open_clip tag of {clip} "
                                f"(known tags: {', '.join(tags) or 'none'})")
    candidates = []
    if cfg.get("hf_hub"):
        candidates.append(_hub_cached_file(cfg["hf_hub"], cache_dir))
    if cfg.get("url"):
        url_cache = Path(cache_dir or Path.home() / ".cache" / "clip")
        candidates.append(str(url_cache / os.path.basename(cfg["url"])))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise MissingInputError(f"weights for open_clip tag {clip}/{pretrained} are not in the local cache and this "
                            f"framework never downloads at run time; fetch them once on a machine with internet "
                            f"(open_clip.create_model('{clip}', pretrained='{pretrained}')) or pass a file path")


def _is_torchscript(path: Path) -> bool:
    return zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, a weights-only torch file, or a TorchScript archive."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if _is_torchscript(path):
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def upcast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors in float32: checkpoints of GPU runs store many CLIP weights in fp16."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _openai_layout(state: dict[str, torch.Tensor]) -> bool:
    return "positional_embedding" in state and "transformer.resblocks.0.attn.in_proj_weight" in state


def weights_quick_gelu(clip: str, pretrained: str, path: Path, state: dict[str, torch.Tensor],
                       reference: bool) -> bool | None:
    """Whether these weights were trained with QuickGELU, as far as they tell.

    An open_clip tag says so in its config (``openai`` tags do). OpenAI's TorchScript archives, state
    dicts carrying OpenAI's metadata entries and EMCL-Net / CLIP4Clip checkpoints are OpenAI-trained
    CLIPs. A plain OpenAI-layout state dict for an architecture that OpenAI released is taken to be
    OpenAI's (set ``model.quick_gelu=false`` for GELU-trained files such as LAION's).
    """
    if not Path(pretrained).expanduser().is_file():
        return bool(open_clip.get_pretrained_cfg(clip, pretrained).get("quick_gelu", False))
    if reference or _is_torchscript(path) or any(k in state for k in OPENAI_METADATA):
        return True
    if _openai_layout(state) and "openai" in open_clip.list_pretrained_tags_by_model(clip.removesuffix("-quickgelu")):
        return True
    return None


def _clip_part(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """(the CLIP entries, whether they came from a reference checkpoint's ``clip.`` prefix)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "positional_embedding" in state or not any(k.startswith(REFERENCE_PREFIX) for k in state):
        return state, False
    return {k.removeprefix(REFERENCE_PREFIX): v for k, v in state.items() if k.startswith(REFERENCE_PREFIX)}, True


def read_clip_weights(clip: str, pretrained: str) -> ClipWeights:
    """The CLIP weights ``model.pretrained`` names, in float32, with what they say about their activation."""
    path = resolve_pretrained(clip, pretrained)
    state, reference = _clip_part(read_state_dict(path))
    quick = weights_quick_gelu(clip, pretrained, path, state, reference)
    return ClipWeights(upcast({k: v for k, v in state.items() if k not in OPENAI_METADATA}), str(path), quick)


def keep_text_positions(state: dict[str, torch.Tensor], context_length: int, source: str) -> None:
    """Keep the first ``context_length`` text position embeddings (never interpolate learned positions)."""
    key = next((k for k in ("positional_embedding", "text.positional_embedding") if k in state), None)
    if key is None:
        return
    available = state[key].shape[0]
    if context_length > available:
        raise ConfigError(f"{source} has {available} text positions; data.max_words={context_length} needs "
                         f"{context_length} (use at most {available})")
    state[key] = state[key][:context_length]


def load_clip_weights(model: nn.Module, weights: ClipWeights) -> None:
    """Load weights into an open_clip model; open_clip converts OpenAI and older layouts. Image positions are
    resized to the model's grid (``data.image_size``); text positions are cut to its context length."""
    state = dict(weights.state)
    state = open_clip.model.convert_to_custom_text_state_dict(state) if hasattr(model, "text") else state
    open_clip.factory.resize_pos_embed(state, model)
    keep_text_positions(state, model.context_length, weights.source)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise ConfigError(f"{weights.source} does not fit this CLIP: {len(missing)} missing keys, e.g. {missing[:3]}")
    if unexpected:
        logger.warning("%s: ignored %d unexpected keys, e.g. %s", weights.source, len(unexpected), unexpected[:3])
    logger.info("loaded CLIP weights from %s", weights.source)
