"""Training samples streamed from tar shards (``data=shards``), decoded as files are, in an exactly resumable order.

Reading: webdataset's tar iterators group each shard's members into samples (``{key}.mp4`` + ``{key}.txt`` +
``{key}.json``, the video2dataset layout). Order: each reader (one DataLoader worker of one process) reads
its portions of the epoch's shards (``multitask.data.shards``) through a shuffle buffer of
``data.shuffle_buffer`` samples; when its portions run out it drains the buffer, so each of its samples comes
once per epoch, then it starts the next epoch. Nothing ends the stream: ``trainer.max_steps`` does.

Resuming: a reader's state (epoch, position, the positions of its buffered samples, draws, counters) rides
with every batch it makes; a checkpoint stores the newest state of every reader, and a resumed reader re-reads
its buffered samples and goes on as the uninterrupted run did. (webdataset's shuffle keeps no state, and HF
datasets' resumable streams refill the buffer with new samples, which is why the buffer is ours.)

Bad input never stops the stream: a video that does not decode, a missing caption, a member cut off in a
truncated tar are skipped and counted (``bad_samples``); a shard that cannot be opened or breaks off is
reported and skipped (``bad_shards``).
"""
from __future__ import annotations

import json
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from multitask.data.shards import Portion, ShardSource, epoch_shards, reader_portions
from multitask.data.video_text import Loading
from multitask.decoding import DecodeError, Decoder, process_decoder
from multitask.errors import DataError
from multitask.video import load_clip
from multitask.video_io import VideoInfo, error_summary

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")  # the member that holds a sample's video


class ShardError(Exception):
    """A shard that cannot be opened, or breaks off (the message says where)."""


class BadSample(Exception):
    """A sample that cannot be used; the message is the reason."""


@dataclass
class ReaderState:
    """Where a reader is: what a checkpoint stores of it, and its counters."""
    epoch: int = 0
    portion: int = 0  # this epoch's portion being read
    position: int = 0  # the next sample's position in that portion's shard
    buffer: list[list[int]] = field(default_factory=list)  # [portion, position] of each buffered sample
    draws: int = 0  # shuffle draws made in this epoch
    batches: int = 0
    samples: int = 0  # samples put into batches
    bad_samples: int = 0
    bad_shards: int = 0


def read_portion(portion: Portion, start: int = 0) -> Iterator[tuple[int, dict]]:
    """(position in the shard, sample) for the portion's samples from ``start`` on; raises ShardError after the
    samples read before the shard could not be opened or broke off."""
    errors: list[BaseException] = []

    def stop(exn: BaseException) -> bool:
        errors.append(exn)
        return False

    try:
        stream = open(portion.url, "rb")
    except OSError as err:
        raise ShardError(f"cannot be opened ({err.strerror or err})") from None
    with stream:
        members = tar_file_expander([{"url": portion.url, "stream": stream}], handler=stop)
        position = -1
        for position, sample in enumerate(group_by_keys(members, handler=stop)):
            if position >= start and position % portion.stride == portion.offset:
                yield position, sample
    if errors:
        where = "cannot be read" if position < 0 else f"breaks off after {position + 1} samples"
        raise ShardError(f"{where} ({_tar_error(errors[0])})")


def _tar_error(exn: BaseException) -> str:
    """``Type: message`` without what webdataset appends to the exception (the stream and the url)."""
    first = exn.args[0] if exn.args else ""
    if isinstance(first, tuple):  # ('invalid header', stream, url)
        first = first[0]
    return f"{type(exn).__name__}: {str(first).split(' @ ')[0]}"


class Reader:
    """One reader's infinite stream of raw samples (position, sample) in shuffled order, epoch after epoch."""

    def __init__(self, sources: list[ShardSource], seed: int, buffer_size: int, reader: int, readers: int,
                 state: ReaderState) -> None:
        self.sources, self.seed, self.buffer_size = sources, seed, max(1, buffer_size)
        self.reader, self.readers, self.state = reader, readers, state
        self.buffer: list[tuple[int, int, dict]] = []  # (portion, position, sample)
        self.bad: list[list] = []  # [epoch, shard, key, reason] since the last batch

    def snapshot(self) -> dict:
        return {**asdict(self.state), "buffer": [[p, o] for p, o, _ in self.buffer]}

    def portions(self) -> list[Portion]:
        return reader_portions(epoch_shards(self.sources, self.seed, self.state.epoch), self.reader, self.readers)

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        """(epoch, sample) forever."""
        while True:
            portions = self.portions()
            self.buffer, self.state.buffer = self._restore(portions, self.state.buffer), []
            empty = not self.buffer and self.state.portion == 0 and self.state.position == 0
            for _, _, sample in self._shuffled(portions):
                empty = False
                yield self.state.epoch, sample
            if empty:
                example = portions[0].url if portions else "-"
                raise DataError(f"reader {self.reader} of {self.readers} found no sample in its shards in epoch "
                                f"{self.state.epoch} ({len(portions)} shards, e.g. {example}): they cannot be read, "
                                "or hold fewer samples than there are readers (processes x data loader workers)")
            self.state = ReaderState(epoch=self.state.epoch + 1, batches=self.state.batches,
                                     samples=self.state.samples, bad_samples=self.state.bad_samples,
                                     bad_shards=self.state.bad_shards)

    def _draw(self, n: int) -> int:
        value = np.random.default_rng([self.seed, self.state.epoch, self.reader, self.state.draws]).integers(n)
        self.state.draws += 1
        return int(value)

    def _shuffled(self, portions: list[Portion]) -> Iterator[tuple[int, int, dict]]:
        """Fill the buffer, then swap each new sample for a random buffered one; drain it at the end."""
        for item in self._source(portions):
            if len(self.buffer) < self.buffer_size:
                self.buffer.append(item)
                continue
            j = self._draw(len(self.buffer))
            out, self.buffer[j] = self.buffer[j], item
            yield out
        while self.buffer:
            j = self._draw(len(self.buffer))
            self.buffer[j], self.buffer[-1] = self.buffer[-1], self.buffer[j]
            yield self.buffer.pop()

    def _source(self, portions: list[Portion]) -> Iterator[tuple[int, int, dict]]:
        state = self.state
        while state.portion < len(portions):
            try:
                for position, sample in read_portion(portions[state.portion], state.position):
                    state.position = position + 1
                    yield state.portion, position, sample
            except ShardError as err:
                state.bad_shards += 1
                self.bad.append([state.epoch, portions[state.portion].url, "", str(err)])
            state.portion, state.position = state.portion + 1, 0

    @staticmethod
    def _restore(portions: list[Portion], locations: list[list[int]]) -> list[tuple[int, int, dict]]:
        """The buffered samples of a checkpointed reader, read again from their shards."""
        found: dict[tuple[int, int], dict] = {}
        for p in sorted({p for p, _ in locations}):
            wanted = {o for q, o in locations if q == p}
            try:
                for position, sample in read_portion(portions[p], min(wanted)):
                    if position in wanted:
                        found[p, position] = sample
                    if position >= max(wanted):
                        break
            except ShardError:
                pass  # a shard that broke off: what was read before the break is all there is
        lost = [(p, o) for p, o in locations if (p, o) not in found]
        if lost:
            raise DataError(f"cannot resume the stream: {len(lost)} samples buffered at the checkpoint are no longer "
                            f"in their shards (e.g. {portions[lost[0][0]].url} sample {lost[0][1]}); the shards "
                            "changed since the checkpoint")
        return [(p, o, found[p, o]) for p, o in locations]


def caption_of(sample: dict, caption_field: str | None, rng: np.random.Generator) -> str:
    """The caption: the ``.txt`` member, or ``caption_field`` of the ``.json`` member (one drawn from a list)."""
    try:
        if caption_field is None:
            text = sample["txt"].decode("utf-8")
        else:
            text = json.loads(sample["json"])[caption_field]
    except KeyError:
        raise BadSample("missing caption" + (" (no .txt member)" if caption_field is None else
                                             f" (no .json member or no {caption_field!r} field in it)")) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadSample(f"unreadable caption ({error_summary(err)})") from None
    if isinstance(text, list):
        text = text[int(rng.integers(len(text)))] if text else ""
    if not isinstance(text, str) or not text.strip():
        raise BadSample("missing caption (empty)")
    return text.strip()


def sample_rng(seed: int, epoch: int, sample: dict) -> np.random.Generator:
    """Frame offsets, crops and caption choice of a sample in an epoch, whichever reader meets it."""
    return np.random.default_rng([seed, epoch, zlib.crc32(f"{sample['__url__']}/{sample['__key__']}".encode())])


@dataclass(frozen=True)
class ClipSettings:
    """How a sample becomes a training item (``data.*``)."""
    num_frames: int
    image_size: int
    augment: bool
    caption_field: str | None
    loading: Loading


def make_item(sample: dict, epoch: int, seed: int, clip: ClipSettings, decoder: Decoder) -> dict:
    """A sample's clip, mask and caption, decoded from memory as a file is; raises BadSample."""
    video = next((sample[ext] for ext in VIDEO_EXTENSIONS if ext in sample), None)
    if video is None:
        raise BadSample("missing video (no ." + " / .".join(VIDEO_EXTENSIONS) + " member)")
    text = caption_of(sample, clip.caption_field, sample_rng(seed, epoch, sample))
    try:
        return {**_clip(video, clip, sample_rng(seed, epoch, sample), decoder), "text": text,
                "key": sample["__key__"]}
    except DecodeError as err:
        raise BadSample(str(err)) from None


def _clip(video: bytes, clip: ClipSettings, rng: np.random.Generator, decoder: Decoder) -> dict[str, torch.Tensor]:
    """The clip of a video held in memory; raises DecodeError. It is probed in the decoder process from its first
    frame; when the sampled frames then fail to decode, the container may claim frames it lacks, so the probe of
    files (the last decodable frame) gives the count to sample from, as for files."""
    quick = decoder.call("probe_video", video, False)
    if not isinstance(quick, VideoInfo):
        raise DecodeError(quick)
    try:
        frames, mask = load_clip(video, quick, clip.num_frames, clip.image_size, rng, augment=clip.augment,
                                 decoder=decoder)
    except DecodeError as err:
        full = decoder.call("probe_video", video) if not str(err).startswith("timeout") else None
        if not isinstance(full, VideoInfo) or full.num_frames == quick.num_frames:
            raise
        frames, mask = load_clip(video, full, clip.num_frames, clip.image_size, rng, augment=clip.augment,
                                 decoder=decoder)
    return {"video": frames, "video_mask": mask}


@dataclass(frozen=True)
class Topology:
    """This process's readers: its rank among ``world`` processes, each with ``workers`` DataLoader workers,
    and the rotation that makes a resumed loader's first batch come from the reader next in turn."""
    rank: int
    world: int
    workers: int
    rotation: int = 0

    @property
    def readers(self) -> int:
        return self.world * max(1, self.workers)

    def reader(self, worker: int) -> int:
        return self.rank * max(1, self.workers) + (worker + self.rotation) % max(1, self.workers)

    def mine(self) -> list[int]:
        return [self.reader(w) for w in range(max(1, self.workers))]


class ShardStream(IterableDataset):
    """Batches of this process's share of the global batch, from its readers in turn (``configure`` first).

    Each batch: ``video`` (b, T, 3, H, W), ``video_mask`` (b, T), ``text`` and ``key`` lists, and ``stream``:
    the reader, its state after the batch, the bad samples and shards met since its last batch, and the
    (epoch, shard, key) of each sample.
    """

    def __init__(self, sources: list[ShardSource], seed: int, shuffle_buffer: int, clip: ClipSettings) -> None:
        self.sources, self.seed, self.shuffle_buffer, self.clip = sources, seed, shuffle_buffer, clip
        self.topology, self.batch_size, self.states = Topology(0, 1, 0), 1, {}

    def configure(self, batch_size: int, topology: Topology, states: dict[int, dict]) -> None:
        """Per-process batch size, readers, and the readers' checkpointed states (empty: a fresh start)."""
        self.batch_size, self.topology, self.states = batch_size, topology, states

    def loader(self) -> DataLoader:
        """Its own generator: starting the iterator then draws nothing from the global RNG (dropout's), so a resumed
        run's dropout masks are the uninterrupted run's."""
        return DataLoader(self, batch_size=None, num_workers=self.topology.workers, persistent_workers=False,
                          generator=torch.Generator().manual_seed(self.seed))

    def _reader(self) -> Reader:
        info = get_worker_info()
        reader = self.topology.reader(info.id if info is not None else 0)
        state = ReaderState(**self.states[reader]) if reader in self.states else ReaderState()
        return Reader(self.sources, self.seed, self.shuffle_buffer, reader, self.topology.readers, state)

    def __iter__(self) -> Iterator[dict]:
        reader, decoder = self._reader(), process_decoder(self.clip.loading.decoder)
        items, seen, last_good_epoch = [], [], reader.state.epoch - 1
        for epoch, sample in reader:
            if epoch > last_good_epoch + 1:
                raise DataError(f"reader {reader.reader} found no usable sample in a whole epoch of its shards "
                                f"(e.g. {reader.bad[-1][1] if reader.bad else 'none'}); check data.shards")
            try:
                items.append(make_item(sample, epoch, self.seed, self.clip, decoder))
            except BadSample as bad:
                reader.state.bad_samples += 1
                reader.bad.append([epoch, sample["__url__"], sample["__key__"], str(bad)])
                continue
            last_good_epoch = epoch
            seen.append([epoch, sample["__url__"], sample["__key__"]])
            if len(items) == self.batch_size:
                reader.state.batches += 1
                reader.state.samples += len(items)
                yield self._batch(items, reader, seen)
                items, seen, reader.bad = [], [], []

    @staticmethod
    def _batch(items: list[dict], reader: Reader, seen: list[list]) -> dict:
        return {"video": torch.stack([i["video"] for i in items]),  # (b, T, 3, H, W)
                "video_mask": torch.stack([i["video_mask"] for i in items]),  # (b, T)
                "text": [i["text"] for i in items], "key": [i["key"] for i in items],
                "stream": {"reader": reader.reader, "state": reader.snapshot(), "bad": reader.bad, "seen": seen}}

    def captions(self, limit: int = 200_000) -> tuple[list[str], list[int]]:
        """Up to ``limit`` captions from the shards in order (for training a caption tokenizer), read without
        the videos, and one per sample (the ``captions()`` of the file datasets)."""
        texts: list[str] = []
        for url in (u for s in self.sources for u in s.urls):
            texts += shard_captions(url, self.clip.caption_field, self.seed)
            if len(texts) >= limit:
                break
        return texts[:limit], [1] * min(len(texts), limit)


def shard_captions(url: str, caption_field: str | None, seed: int) -> list[str]:
    """The captions of one shard, reading only its caption members (tarfile seeks past the videos)."""
    suffix = ".txt" if caption_field is None else ".json"
    texts = []
    try:
        with tarfile.open(url, "r:") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(suffix):
                    sample = {suffix[1:]: tar.extractfile(member).read()}
                    try:
                        texts.append(caption_of(sample, caption_field, np.random.default_rng(seed)))
                    except BadSample:
                        continue
    except (OSError, tarfile.TarError):
        return texts  # the stream reports the shard when it meets it
    return texts
