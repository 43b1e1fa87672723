"""``model.init_from=CHECKPOINT``: start a new run from another run's weights (a pre-training checkpoint, say).

Parameters are matched by name whatever task holds them: the shared parts (``backbone.*``, ``emcl.*``, the EMCL
mean included) by their own names, a head's parts by head and name (task=multi keeps head ``h`` under
``tasks.h.``, a single-task run of ``h`` at the top level). What fits in name and shape is loaded; the rest
keeps its fresh initialisation, and the log names each part that was new, of another shape, or not used.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from multitask.checkpoint import CheckpointError, read_meta

logger = logging.getLogger(__name__)

SHARED = ("backbone", "emcl")  # attributes every task has; task=multi shares one of each between its heads
_HEAD = re.compile(r"^tasks\.([^.]+)\.(.*)$")


def canonical(name: str, task: str) -> str:
    """``tasks.caption.decoder.x`` -> ``caption:decoder.x``; ``decoder.x`` of task caption likewise;
    ``[tasks.<h>.]backbone.x`` -> ``backbone.x``."""
    found = _HEAD.match(name)
    head, rest = (found[1], found[2]) if found else (task, name)
    return rest if rest.split(".")[0] in SHARED else f"{head}:{rest}"


def _parts(names: list[str]) -> str:
    """Names summarised by their first two components: ``decoder.gpt (38 tensors), ...``."""
    counts = Counter(".".join(n.split(".")[:2]) for n in names)
    return ", ".join(f"{part} ({n} tensor{'s' if n > 1 else ''})" for part, n in sorted(counts.items()))


def init_weights(task: nn.Module, folder: str | Path) -> dict[str, list[str]]:
    """Load what fits of ``folder``'s weights into ``task``; returns and logs what did not."""
    folder = Path(folder).expanduser()
    source_task = read_meta(folder, None)["task"]
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"model.init_from={folder} has no model.safetensors")
    source = {canonical(k, source_task): v for k, v in load_file(str(folder / "model.safetensors")).items()}
    own = task.state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}  # one entry per tensor: a head of task=multi sees the shared parts too
    for name, tensor in own.items():
        aliases.setdefault(id(tensor), []).append(name)
    fits: dict[str, torch.Tensor] = {}
    report: dict[str, list[str]] = {"new": [], "other shape": [], "not used": []}
    used = set()
    for names in aliases.values():
        match = next((key for key in (canonical(n, task.name) for n in names) if key in source), None)
        if match is None:
            report["new"].append(names[0])
            continue
        used.add(match)
        if source[match].shape != own[names[0]].shape:
            report["other shape"].append(names[0])
            continue
        fits[names[0]] = source[match]
    if not fits:
        raise CheckpointError(f"nothing in model.init_from={folder} (task {source_task}) fits this model: a "
                              "checkpoint of another architecture (model.clip, widths)?")
    report["not used"] = sorted(set(source) - used)
    task.load_state_dict(fits, strict=False)
    logger.info("model.init_from=%s (task %s): %d of %d tensors loaded", folder, source_task, len(fits),
                len(aliases))
    for what, names in report.items():
        if names:
            logger.warning("model.init_from: %s: %s", what, _parts(names))
    return report
