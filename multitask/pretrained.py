"""Loading CLIP weights without the network: a file path, or an open_clip tag from the local cache.

Nothing here downloads. Files load through safetensors or ``torch.load(weights_only=True)``;
OpenAI's TorchScript archives load through ``torch.jit.load`` (no pickled Python objects).
"""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import open_clip
import torch
from torch import nn

logger = logging.getLogger(__name__)


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
        raise FileNotFoundError(f"model.pretrained={pretrained!r} is neither a file nor an open_clip tag of {clip} "
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
    raise FileNotFoundError(f"weights for open_clip tag {clip}/{pretrained} are not in the local cache and this "
                            f"framework never downloads at run time; fetch them once on a machine with internet "
                            f"(open_clip.create_model('{clip}', pretrained='{pretrained}')) or pass a file path")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, a weights-only torch file, or a TorchScript archive."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_clip_weights(model: nn.Module, clip: str, pretrained: str) -> None:
    """Load weights into an open_clip model; open_clip converts OpenAI and older layouts."""
    path = resolve_pretrained(clip, pretrained)
    state = read_state_dict(path)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = open_clip.model.convert_to_custom_text_state_dict(state) if hasattr(model, "text") else state
    open_clip.factory.resize_pos_embed(state, model)
    open_clip.factory.resize_text_pos_embed(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{path} does not fit {clip}: {len(missing)} missing keys, e.g. {missing[:3]}")
    if unexpected:
        logger.warning("%s: ignored %d unexpected keys, e.g. %s", path, len(unexpected), unexpected[:3])
    logger.info("loaded CLIP weights from %s", path)
