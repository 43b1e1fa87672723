"""Exact distributed feature extraction: every sample encoded once, on exactly one process.

Each rank encodes a contiguous shard (no sampler padding, so no duplicates for any test size);
the shards are gathered in rank order, so every rank holds the features in dataset order. Videos that
did not load (``data.on_bad_video=skip``) come back listed, for the evaluation to leave out.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from multitask.dist import gather_cat, gather_objects, rank, world_size

logger = logging.getLogger(__name__)


@dataclass
class EncodedVideos:
    frames: torch.Tensor  # (V, T, D)
    mask: torch.Tensor  # (V, T)
    failed: dict[int, str]  # dataset position of each video that did not load -> "path: reason"

    def kept(self) -> list[int]:
        """Positions of the videos that loaded, in order."""
        return [i for i in range(self.frames.shape[0]) if i not in self.failed]


def shard(n: int, rank_: int, world: int) -> range:
    """Contiguous, nearly equal, non-overlapping shards covering range(n)."""
    step, extra = divmod(n, world)
    start = rank_ * step + min(rank_, extra)
    return range(start, start + step + (rank_ < extra))


def _collate(items: list[dict]) -> dict:
    batch = {key: torch.stack([item[key] for item in items]) for key in ("video", "video_mask")}
    return {**batch, "failed": [json.loads(item.get("failed", "[]")) for item in items]}


@torch.no_grad()
def encode_videos(backbone: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int,
                  num_workers: int = 0) -> EncodedVideos:
    """Per-frame features (V, T, D) and masks (V, T) of every video, in dataset order."""
    mine = shard(len(dataset), rank(), world_size())
    loader = DataLoader(Subset(dataset, list(mine)), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate)
    frames = [torch.zeros(0, dataset.num_frames, backbone.embed_dim, device=device)]  # an empty shard still gathers
    masks = [torch.zeros(0, dataset.num_frames, dtype=torch.long, device=device)]
    failed: list[tuple[int, str]] = []
    for batch in tqdm(loader, desc="encoding videos", disable=rank() != 0, leave=False):
        failed += [(mine.start + sum(len(m) for m in masks[1:]) + k, f"{f[0][0]}: {f[0][1]}")
                   for k, f in enumerate(batch["failed"]) if f]
        mask = batch["video_mask"].to(device)
        frames.append(backbone.encode_frames(batch["video"].to(device), mask).float())
        masks.append(mask)
    failures = dict(gather_objects(failed))
    for reason in failures.values():
        logger.warning("left out of the evaluation, it did not load: %s", reason)
    return EncodedVideos(gather_cat(torch.cat(frames)), gather_cat(torch.cat(masks)), failures)


@torch.no_grad()
def encode_texts(backbone: torch.nn.Module, texts: list[str], batch_size: int,
                 encode: Callable[[list[str]], torch.Tensor] | None = None) -> torch.Tensor:
    """Text features (N, D) of every text, in order (on the backbone's device); ``encode``: strings -> (b, D),
    ``backbone.encode_strings`` unless given."""
    encode = encode or backbone.encode_strings
    mine = [texts[i] for i in shard(len(texts), rank(), world_size())]
    steps = tqdm(range(0, len(mine), batch_size), desc="encoding texts", disable=rank() != 0, leave=False)
    out = [torch.zeros(0, backbone.embed_dim, device=backbone.device)]  # an empty shard still gathers
    out += [encode(mine[i: i + batch_size]).float() for i in steps]
    return gather_cat(torch.cat(out))
