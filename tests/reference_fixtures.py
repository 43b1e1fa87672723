"""Deterministic stand-ins for a checkpoint of the public EMCL-Net and its inputs (tests/data/README.md).

Values come from NumPy's PCG64 generator (stable across NumPy versions), so the golden numbers that
the reference code produced once for them stay valid on any machine.
"""
from __future__ import annotations

import math

import numpy as np
import open_clip
import torch

import multitask.backbone  # noqa: F401  (registers the tiny open_clip architecture)

CAPTIONS = [
    "a man is driving a car down the road",
    "two women are talking in a kitchen &amp; laughing",
    "A VERY long caption about a cooking show host who explains, step by step and with great care, "
    "how to prepare a traditional recipe with tomatoes, onions, garlic, olive oil, basil and fresh pasta",
]


def _value(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    if name.endswith("logit_scale"):
        return np.asarray(math.log(1 / 0.07), dtype=np.float32)
    if ".ln_" in name:
        return (1.0 + 0.1 * noise) if name.endswith("weight") else 0.02 * noise
    if name.endswith(("text_projection", "visual.proj", "class_embedding")):
        return noise * shape[0] ** -0.5
    if name.endswith("positional_embedding"):
        return 0.05 * noise
    return 0.02 * noise


def clip_shapes(clip: str, context_length: int = 77) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of an OpenAI-layout CLIP (what the reference's CLIP module holds)."""
    model = open_clip.create_model(clip, force_quick_gelu=True, force_context_length=context_length)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def reference_state(clip: str = "emcl-tiny", temporal_layers: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict laid out as EMCL-Net's training script saves it (seqTransf), random values."""
    shapes = {f"clip.{k}": s for k, s in clip_shapes(clip).items()}
    width = shapes["clip.ln_final.weight"][0]
    shapes["frame_position_embeddings.weight"] = shapes["clip.positional_embedding"]
    block = {k.removeprefix("clip.transformer.resblocks.0."): s for k, s in shapes.items()
             if k.startswith("clip.transformer.resblocks.0.")}
    shapes.update({f"transformerClip.resblocks.{i}.{k}": s for i in range(temporal_layers) for k, s in block.items()})
    assert shapes["frame_position_embeddings.weight"] == (77, width)
    rng = np.random.default_rng(seed)
    return {k: torch.from_numpy(np.array(_value(rng, k, shapes[k]))) for k in sorted(shapes)}


def reference_mean(num_bases: int = 32, seed: int = 1) -> torch.Tensor:
    """An EMCL running mean as the reference initialises it: normal(0, sqrt(2/K)) / (1e-6 + |x|)."""
    draw = np.random.default_rng(seed).normal(0.0, math.sqrt(2.0 / num_bases), num_bases).astype(np.float32)
    return torch.from_numpy(draw / (1e-6 + np.abs(draw)))


def reference_inputs(image_size: int = 64, num_frames: int = 4, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames (3, T, 3, S, S) CLIP-normalised, mask (3, T)); the last video is padded by one frame."""
    rng = np.random.default_rng(seed)
    frames = rng.standard_normal((3, num_frames, 3, image_size, image_size)).astype(np.float32)
    mask = np.ones((3, num_frames), dtype=np.int64)
    mask[2, -1] = 0
    frames[2, -1] = 0.0  # what a loader puts in a padded slot
    return torch.from_numpy(frames), torch.from_numpy(mask)


QUESTIONS = [
    "what is a man driving down the road?",
    "who is talking in a kitchen?",
    "what does the host prepare with tomatoes and onions and garlic and olive oil and basil and fresh pasta for the show?",
]
LABELS = [1, 4, 7]  # the answer index of each question (training loss)


def reference_qa_state(clip: str = "emcl-tiny", num_answers: int = 10, temporal_layers: int = 4,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict laid out as EMCL-QA's training script saves it (its EMCL4QA network), random values."""
    shapes = {f"clip.{k}": s for k, s in clip_shapes(clip).items()}
    width, embed = shapes["clip.ln_final.weight"][0], shapes["clip.text_projection"][1]
    shapes["frame_position_embeddings.weight"] = (77, width)
    block = {k.removeprefix("clip.transformer.resblocks.0."): s for k, s in shapes.items()
             if k.startswith("clip.transformer.resblocks.0.")}
    shapes.update({f"transformerClip.resblocks.{i}.{k}": s for i in range(temporal_layers) for k, s in block.items()})
    hidden = 8 * width  # the concatenated projections; the classifier's hidden layer is twice that
    for pool in ("v_w", "t_w"):
        shapes.update({f"{pool}.0.weight": (width, width), f"{pool}.0.bias": (width,),
                       f"{pool}.2.weight": (1, embed), f"{pool}.2.bias": (1,)})
    for proj in ("v_proj", "t_proj"):
        shapes.update({f"{proj}.weight": (4 * width, width), f"{proj}.bias": (4 * width,)})
    shapes.update({"mean_proj.weight": (embed, embed), "mean_proj.bias": (embed,),
                   "classifier.0.weight": (2 * hidden, hidden), "classifier.0.bias": (2 * hidden,),
                   "classifier.2.weight": (num_answers, 2 * hidden), "classifier.2.bias": (num_answers,)})
    rng = np.random.default_rng(seed)
    return {k: torch.from_numpy(np.array(_value(rng, k, shapes[k]))) for k in sorted(shapes)}
