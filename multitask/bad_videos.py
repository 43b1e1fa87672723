"""Videos that fail while training loads them (``data.on_bad_video=skip``): recorded with the step in
``skipped_videos.json`` beside those the check before training left out, and a stop when too many fail."""
from __future__ import annotations

import json
from pathlib import Path

from multitask.data.checks import BadVideoError
from multitask.dist import gather_objects, global_sum
from multitask.runlog import write_json

MIN_FAILED_TO_STOP = 10  # a handful of damaged files never stops a run, however small the dataset


class BadVideoLog:
    """Counts video loads and the distinct videos that failed, over all processes. ``update`` is called by every
    rank after every step (it runs collectives); only the main process writes."""

    def __init__(self, path: Path, before: dict[str, str], max_fraction: float, is_main: bool) -> None:
        self.path, self.before, self.max_fraction, self.is_main = path, before, max_fraction, is_main
        self.loads, self.failed = 0, {}  # failed: path -> {"reason", "step"}

    def state(self) -> dict:
        """What a checkpoint keeps, so a resumed run counts as the uninterrupted one did."""
        return {"loads": self.loads, "failed": self.failed}

    def restore(self, state: dict | None) -> None:
        if state:
            self.loads, self.failed = state["loads"], dict(state["failed"])
            self.write()

    def update(self, failed_fields: list[str], step: int) -> None:
        """``failed_fields``: this rank's batch's ``"failed"`` JSON fields, one per sample."""
        records = [tuple(r) for field in failed_fields for r in json.loads(field)]
        counts = global_sum(float(len(failed_fields) + len(records))), global_sum(float(len(records)))
        self.loads += int(counts[0])
        if not counts[1]:
            return
        for path, reason in gather_objects(records):
            self.failed.setdefault(path, {"reason": reason, "step": step})
        self.write()
        limit = max(MIN_FAILED_TO_STOP, self.max_fraction * self.loads)
        if len(self.failed) > limit:
            listing = "; ".join(f"{p}: {r['reason']}" for p, r in list(self.failed.items())[:5])
            raise BadVideoError(f"{len(self.failed)} distinct videos failed to load in {self.loads} loads, more than "
                                f"data.max_bad_fraction={self.max_fraction} allows; the data looks broken (e.g. "
                                f"{listing}); the last checkpoint is kept")

    def write(self) -> None:
        if self.is_main and (self.before or self.failed):
            write_json(self.path, {"count": len(self.before) + len(self.failed), "videos": self.before,
                                   "while_training": self.failed})
