"""Which tar shards each reader of a sharded corpus reads in an epoch (``data=shards``).

``data.shards`` names the shards: brace patterns (webdataset's expansion, ``/data/webvid/{00000..01023}.tar``),
several joined with ``::`` (or given as a list), each with an optional sampling weight after ``@``
(``/data/webvid/{00000..01023}.tar@1::/data/cc/{000..099}.tar@0.5``). A reader is one DataLoader worker of
one process; every epoch each source's shards enter the epoch's list ``weight`` times (the fraction of a
non-integer weight as that share of its shards, drawn for the epoch), the list is shuffled from (seed, epoch),
and reader ``r`` of ``R`` takes every R-th shard from position r. With fewer shards than readers, the readers
of a shard each take every m-th of its samples, so every sample is still read once per epoch.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from webdataset.shardlists import expand_urls

from multitask.errors import ConfigError, MissingInputError

logger = logging.getLogger(__name__)

_WEIGHT = re.compile(r"^(?P<pattern>.+)@(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


@dataclass(frozen=True)
class ShardSource:
    """The shards one pattern names, and how many times per epoch they are read."""
    urls: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class Portion:
    """What one reader takes of one shard: the samples whose position in the shard is ``offset`` mod ``stride``."""
    url: str
    stride: int = 1
    offset: int = 0


def _parts(spec: str | list[str]) -> list[str]:
    parts = spec.split("::") if isinstance(spec, str) else [p for item in spec for p in str(item).split("::")]
    return [p.strip() for p in parts if p.strip()]


def parse_shards(spec: str | list[str] | None) -> list[ShardSource]:
    """``data.shards`` -> its sources, brace patterns expanded; an empty spec or a weight <= 0 is an error."""
    parts = _parts(spec or "")
    if not parts:
        raise ConfigError("data=shards needs data.shards, e.g. data.shards=/data/webvid/{00000..01023}.tar")
    sources = []
    for part in parts:
        found = _WEIGHT.match(part)
        pattern, weight = (found["pattern"], float(found["weight"])) if found else (part, 1.0)
        if weight <= 0:
            raise ConfigError(f"data.shards: the weight of {pattern!r} must be > 0, got {weight:g}")
        sources.append(ShardSource(tuple(expand_urls(str(Path(pattern).expanduser()))), weight))
    return sources


def check_sources(sources: list[ShardSource]) -> None:
    """Stop when no shard exists; name the missing ones (each is reported and skipped when its turn comes)."""
    urls = [u for s in sources for u in s.urls]
    missing = [u for u in urls if not Path(u).is_file()]
    if len(missing) == len(urls):
        raise MissingInputError(f"none of the {len(urls)} shards of data.shards exists, e.g. {urls[0]}")
    if missing:
        logger.warning("%d of %d shards do not exist and will be skipped, e.g. %s", len(missing), len(urls),
                       ", ".join(missing[:3]))


def epoch_shards(sources: list[ShardSource], seed: int, epoch: int) -> list[str]:
    """The epoch's shard list for the whole job: each source's shards ``weight`` times (a fraction as a
    share of its shards drawn for this epoch), shuffled; the same on every process and worker."""
    rng = np.random.default_rng([seed, epoch])
    shards: list[str] = []
    for source in sources:
        whole, fraction = divmod(source.weight, 1.0)
        shards += list(source.urls) * int(whole)
        extra = int(round(fraction * len(source.urls)))
        shards += [source.urls[i] for i in sorted(rng.choice(len(source.urls), extra, replace=False).tolist())]
    return [shards[i] for i in rng.permutation(len(shards)).tolist()]


def reader_portions(shards: list[str], reader: int, readers: int) -> list[Portion]:
    """What reader ``reader`` of ``readers`` reads of the epoch's ``shards``: every readers-th shard from its
    position, or, with fewer shards than readers, its share of one shard's samples."""
    if not shards:
        return []
    if len(shards) >= readers:
        return [Portion(url) for url in shards[reader::readers]]
    position = reader % len(shards)
    sharing = len(range(position, readers, len(shards)))  # the readers that read this shard
    return [Portion(shards[position], sharing, reader // len(shards))]
