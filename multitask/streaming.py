"""The training loop's side of a streamed corpus (``data=shards``, ``multitask.data.stream``).

Every process reads its own share of the shards (not accelerate's dispatching, where one process would read
and decode every global batch): ``trainer.batch_size`` stays the global batch, each process makes batches of
``batch_size / processes`` from its readers, and ``trainer.max_steps`` sets the run's length. ``StreamProgress``
keeps the newest state of each of this process's readers from the batches it consumed (what a checkpoint
stores, so a resumed run reads on exactly where the checkpointed one was), tags each batch with the head it
trains (task=multi: the heads in turn), and gives the counters ``metrics.jsonl`` records.
"""
from __future__ import annotations

import logging
from pathlib import Path

from accelerate.utils import send_to_device

from multitask.data.stream import ReaderState, ShardStream, Topology
from multitask.dist import gather_objects
from multitask.errors import ConfigError
from multitask.runlog import MetricsLog
from multitask.types import TaskData

logger = logging.getLogger(__name__)

COUNTERS = ("samples", "bad_samples", "bad_shards")  # summed over every reader into metrics.jsonl


def is_stream(data: TaskData) -> bool:
    return isinstance(data.train, ShardStream)


def stream_steps(trainer: dict) -> int:
    if not trainer["max_steps"]:
        raise ConfigError("data=shards streams without end: set trainer.max_steps (the run's length in optimizer "
                          "steps)")
    return int(trainer["max_steps"])


def per_process_batch(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise ConfigError(f"trainer.batch_size={batch_size} must be divisible by the {world} processes")
    return batch_size // world


def restored_states(saved: dict | None, topology: Topology) -> dict[int, dict]:
    """The readers' states to start from: a checkpoint's, when it was taken with as many readers."""
    if not saved:
        return {}
    states = {int(k): v for k, v in saved["states"].items()}
    if saved["readers"] == topology.readers:
        return states
    epoch = min(s["epoch"] for s in states.values())
    logger.warning("the checkpoint's stream had %d readers, this run has %d (processes x data loader workers): "
                   "the stream restarts at the beginning of epoch %d, so samples of that epoch read before the "
                   "checkpoint are read again", saved["readers"], topology.readers, epoch)
    totals = {k: sum(s[k] for s in states.values()) for k in COUNTERS}
    return {0: {**totals, "epoch": epoch}} if topology.rank == 0 else {}


class StreamProgress:
    """This process's view of the stream: its readers' newest states and what they met since the last log."""

    def __init__(self, stream: ShardStream, heads: list[str], out: Path, record_samples: bool,
                 is_main: bool) -> None:
        self.stream, self.heads = stream, heads
        self.states = {r: {**vars(ReaderState()), **stream.states.get(r, {})} for r in stream.topology.mine()}
        self.consumed = sum(s["batches"] for s in self.states.values())  # this process's batches so far
        self.bad: list[list] = []
        self.seen: list[list] = []
        self.bad_log = MetricsLog(out / "skipped_samples.jsonl", is_main)
        self.seen_log = MetricsLog(out / "samples_seen.jsonl", is_main and record_samples)
        self.record_samples = record_samples

    def truncate_after(self, step: int) -> None:
        self.bad_log.truncate_after(step)
        self.seen_log.truncate_after(step)

    def consume(self, batch: dict, device) -> dict:
        """Take the batch's reader state and records, tag it with its head, move it to ``device``."""
        info = batch.pop("stream")
        self.states[info["reader"]] = info["state"]
        self.bad += info["bad"]
        if self.record_samples:
            self.seen += info["seen"]
        if self.heads:
            batch["task"] = [self.heads[self.consumed % len(self.heads)]] * len(batch["text"])
        self.consumed += 1
        return send_to_device(batch, device)

    def log_fields(self, step: int) -> dict:
        """Counters over every reader of every process (``epoch``: the epoch of the slowest reader); writes the
        bad samples met since the last log to ``skipped_samples.jsonl``. Every process calls it."""
        states = gather_objects([{k: s[k] for k in ("epoch", *COUNTERS)} for s in self.states.values()])
        bad, self.bad = gather_objects(self.bad), []
        if bad:
            self.bad_log.write({"step": step, "skipped": [{"epoch": e, "shard": s, "key": k, "reason": r}
                                                          for e, s, k, r in bad]})
            self._warn(bad)
        if self.record_samples:
            seen, self.seen = gather_objects(self.seen), []
            self.seen_log.write({"step": step, "samples": seen})
        return {"epoch": min(s["epoch"] for s in states), **{k: sum(s[k] for s in states) for k in COUNTERS}}

    def _warn(self, bad: list[list]) -> None:
        """Each skipped shard on the console; skipped samples as a count (skipped_samples.jsonl has them all)."""
        if not self.bad_log.enabled:
            return
        shards = [(shard, reason) for _, shard, key, reason in bad if not key]
        for shard, reason in shards:
            logger.warning("skipped shard %s: %s", shard, reason)
        if len(bad) > len(shards):
            logger.warning("skipped %d samples since the last log, e.g. %s: %s (skipped_samples.jsonl)",
                           len(bad) - len(shards), *next((k, r) for _, _, k, r in bad if k))

    def checkpoint_state(self) -> dict:
        """Every reader's state, for the checkpoint's meta.json. Every process calls it."""
        pairs = gather_objects(list(self.states.items()))
        return {"readers": self.stream.topology.readers, "states": {str(r): s for r, s in sorted(pairs)}}


def stream_progress(conf: dict, data: TaskData, rank: int, world: int, saved: dict | None,
                    is_main: bool) -> StreamProgress:
    """Configure the stream for this process (its batch size, readers and their restored states)."""
    stream: ShardStream = data.train
    workers = conf["trainer"]["num_workers"]
    topology = Topology(rank, world, workers)
    states = restored_states(saved, topology)
    consumed = sum(states.get(r, {}).get("batches", 0) for r in topology.mine())
    topology = Topology(rank, world, workers, rotation=consumed % max(1, workers))  # next batch: next reader in turn
    stream.configure(per_process_batch(conf["trainer"]["batch_size"], world), topology, states)
    return StreamProgress(stream, list(data.parts), Path(conf["output_dir"]), conf["data"]["record_samples"],
                          is_main)
