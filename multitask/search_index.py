"""A resumable on-disk index of video features for ``multitask search``, with an approximate first stage.

Folder layout: ``index.json`` ({"format": 2, "checkpoint", "dim", "entries": [{"id", "path", "part"}],
"failed": {path: reason}, "ann": {"trained_on"}}), ``part_<k>.safetensors`` ({"frames": (n, T, D),
"mask": (n, T), "pooled": (n, D)}) and ``ann.faiss`` (``multitask.ann``: the pooled features of the entries,
in entry order). Each batch is written as a new part and then recorded in ``index.json`` (atomically), so an
interrupted run loses at most one batch and a re-run encodes only what is missing; the first stage is
brought up to date at the end of each run, and entries it does not hold yet are scored exactly.
Format 1 folders (no pooled features, no first stage) are still searched exactly; ``multitask index``
upgrades them from their stored features without decoding any video.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from multitask import ann
from multitask.data.video_index import VIDEO_EXTENSIONS
from multitask.decoding import DecoderSpec, probe_all
from multitask.errors import ConfigError, MissingInputError
from multitask.files import atomic_path, atomic_write_text
from multitask.types import FrameFeatures
from multitask.video_io import UnreadableVideoError, VideoInfo

Encoder = Callable[..., FrameFeatures]  # Model.encode_frames(paths, batch_size, progress=, infos=, root=)
Pooler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # Model.pool_frames: (n, T, D), (n, T) -> (n, D)

META = "index.json"
FORMAT = 2


def video_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise MissingInputError(f"video folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _read_meta(out: Path, checkpoint: str) -> dict:
    if not (out / META).is_file():
        return {"format": FORMAT, "checkpoint": checkpoint, "entries": [], "failed": {}}
    meta = json.loads((out / META).read_text())
    if meta["checkpoint"] != checkpoint:
        raise ConfigError(f"index {out} was built with checkpoint {meta['checkpoint']}, not {checkpoint}: "
                         "use another --out folder")
    return meta


def _write_meta(out: Path, meta: dict) -> None:
    atomic_write_text(out / META, json.dumps(meta, indent=1))


def _part(out: Path, part: int) -> Path:
    return out / f"part_{part}.safetensors"


def update_index(encode: Encoder, pool: Pooler, checkpoint: str, video_dir: Path, out: Path, decoder: DecoderSpec,
                 batch_size: int = 16, policy: ann.Policy = ann.Policy()) -> dict:
    """Encode every video under ``video_dir`` not yet in the index at ``out`` (with ``encode`` and ``pool``, the
    ``encode_frames`` and ``pool_frames`` of the model ``checkpoint`` names), then bring the first stage up to
    date; bad files are recorded. Returns {"added", "already", "failed": {path: reason}}.
    """
    out.mkdir(parents=True, exist_ok=True)
    video_dir = video_dir.expanduser().resolve()  # entries are absolute paths: `./clips` and `clips` agree
    meta = _read_meta(out, checkpoint)
    _upgrade(out, meta, pool)
    done = {e["path"] for e in meta["entries"]}
    files = video_files(video_dir)
    todo = [str(p) for p in files if str(p) not in done]
    good, bad = probe_all(todo, decoder, show_progress=True)
    readable = [p for p in todo if p in good]
    part, added = 1 + max((e["part"] for e in meta["entries"]), default=-1), 0
    for i in tqdm(range(0, len(readable), batch_size), desc="indexing", disable=not readable):
        batch, feats = _encode(encode, readable[i: i + batch_size], good, bad, video_dir)
        if not batch:
            continue
        save_file({"frames": feats.frames.contiguous(), "mask": feats.mask.contiguous(),
                   "pooled": pool(feats.frames, feats.mask).float().contiguous()}, str(_part(out, part)))
        meta["entries"] += [{"id": i, "path": p, "part": part} for i, p in zip(feats.ids, batch)]
        meta["dim"] = int(feats.frames.shape[-1])
        _write_meta(out, meta)
        part, added = part + 1, added + len(batch)
    meta["failed"] = bad
    _update_first_stage(out, meta, policy)
    _write_meta(out, meta)
    return {"added": added, "already": len(files) - len(todo), "failed": bad}


def _encode(encode: Encoder, batch: list[str], infos: dict[str, VideoInfo], bad: dict[str, str],
            root: Path) -> tuple[list[str], FrameFeatures | None]:
    """(the paths encoded, their features): a batch in one pass, or file by file when one of them fails
    to decode past the probe; those failures are added to ``bad``."""
    try:
        return batch, encode(batch, len(batch), progress=False, infos=infos, root=root)
    except UnreadableVideoError:
        pass
    encoded, parts = [], []
    for path in batch:
        try:
            parts.append(encode([path], 1, progress=False, infos=infos, root=root))
            encoded.append(path)
        except UnreadableVideoError as err:
            bad.update(err.reasons)
    if not parts:
        return [], None
    return encoded, FrameFeatures([i for f in parts for i in f.ids], torch.cat([f.frames for f in parts]),
                                  torch.cat([f.mask for f in parts]))


def _upgrade(out: Path, meta: dict, pool: Pooler) -> None:
    """A format-1 folder: add the pooled features to every part (from its stored frames) and mark it format 2."""
    if meta.get("format", 1) >= FORMAT:
        return
    for part in tqdm(sorted({e["part"] for e in meta["entries"]}), desc="adding pooled features", leave=False):
        tensors = load_file(str(_part(out, part)))
        tensors["pooled"] = pool(tensors["frames"], tensors["mask"]).float().contiguous()
        meta["dim"] = int(tensors["frames"].shape[-1])
        with atomic_path(_part(out, part)) as tmp:
            save_file(tensors, str(tmp))
    meta["format"] = FORMAT
    _write_meta(out, meta)


def _update_first_stage(out: Path, meta: dict, policy: ann.Policy) -> None:
    """Add the entries ``ann.faiss`` lacks, or build it anew (none yet, or ``ann.needs_rebuild``)."""
    total = len(meta["entries"])
    if not total:
        return
    path, trained_on = out / ann.FILE, meta.get("ann", {}).get("trained_on", 0)
    index = ann.load(path) if path.is_file() else None
    if index is None or index.ntotal > total or ann.needs_rebuild(index, total, policy, trained_on):
        index, trained_on = ann.build(_pooled(out, meta["entries"], 0), policy), total
    elif index.ntotal < total:
        ann.add(index, _pooled(out, meta["entries"], index.ntotal))
    ann.save(index, path)
    meta["ann"] = {"trained_on": trained_on}


def _rows(entries: list[dict]) -> list[tuple[int, int]]:
    """(part, row in that part) of every entry, in entry order."""
    seen: dict[int, int] = {}
    rows = []
    for e in entries:
        rows.append((e["part"], seen.get(e["part"], 0)))
        seen[e["part"]] = rows[-1][1] + 1
    return rows


def _read_rows(folder: Path, rows: Sequence[tuple[int, int]], name: str) -> torch.Tensor:
    """Tensor ``name`` of the given (part, row)s, stacked in that order; each part is opened once, and only the
    span of its rows asked for is read."""
    by_part: dict[int, list[int]] = {}
    for k, (part, _) in enumerate(rows):
        by_part.setdefault(part, []).append(k)
    order, blocks = [], []
    for part, ks in tqdm(by_part.items(), desc=f"reading {name}", leave=False, disable=len(by_part) < 1000):
        wanted = [rows[k][1] for k in ks]
        with safe_open(str(_part(folder, part)), framework="pt") as f:
            span = f.get_slice(name)[min(wanted): max(wanted) + 1]
        blocks.append(span[[r - min(wanted) for r in wanted]])
        order += ks
    stacked = torch.cat(blocks)
    return stacked[torch.argsort(torch.tensor(order))]


def _pooled(folder: Path, entries: list[dict], start: int) -> np.ndarray:
    """Pooled features of ``entries[start:]`` (n, D), float32, in entry order."""
    return _read_rows(folder, _rows(entries)[start:], "pooled").numpy()


class SearchIndex:
    """An index folder opened for search: the ids, the first stage, and features read only where needed."""

    def __init__(self, folder: Path) -> None:
        if not (folder / META).is_file():
            raise MissingInputError(f"{folder} is not an index (no {META}); build one with `multitask index`")
        meta = json.loads((folder / META).read_text())
        if not meta["entries"]:
            raise ConfigError(f"index {folder} holds no videos")
        self.folder, self.checkpoint, self.format = folder, meta["checkpoint"], meta.get("format", 1)
        self.entries, self.rows = meta["entries"], _rows(meta["entries"])
        self.ids = [e["id"] for e in self.entries]
        self.dim = meta.get("dim") or int(_read_rows(folder, self.rows[:1], "frames").shape[-1])
        self._first_stage = ann.load(folder / ann.FILE) if (folder / ann.FILE).is_file() else None

    def candidates(self, query: np.ndarray, count: int) -> list[int]:
        """Positions of the ``count`` entries whose pooled features best match ``query`` (D,), L2-normalised,
        in entry order. Entries an interrupted ``multitask index`` left out of the first stage are scored
        exactly."""
        if self.format < FORMAT:
            raise ConfigError(f"index {self.folder} has no approximate first stage (it was written before there "
                              f"was one): run `multitask index VIDEO_DIR --checkpoint {self.checkpoint} --out "
                              f"{self.folder}` once to add it (no video is decoded again), or search it exactly "
                              "(--exact)")
        scores, ids, covered = np.zeros(0, np.float32), np.zeros(0, np.int64), 0
        if self._first_stage is not None:  # None: the first run was interrupted before writing it
            covered = self._first_stage.ntotal
            scores, ids = ann.search(self._first_stage, query[None], count)
            scores, ids = scores[0][ids[0] >= 0], ids[0][ids[0] >= 0]
        if covered < len(self.ids):
            tail = _pooled(self.folder, self.entries, covered) @ query  # (len - covered,)
            scores, ids = np.concatenate([scores, tail]), np.concatenate([ids, np.arange(covered, len(self.ids))])
        return sorted(ids[np.argsort(-scores, kind="stable")[:count]].tolist())

    def features(self, positions: Sequence[int] | None = None) -> FrameFeatures:
        """Per-frame features of the entries at ``positions`` (None: all), in that order."""
        positions = range(len(self.ids)) if positions is None else positions
        rows = [self.rows[p] for p in positions]
        return FrameFeatures([self.ids[p] for p in positions], _read_rows(self.folder, rows, "frames"),
                             _read_rows(self.folder, rows, "mask"))


def load_index(folder: Path) -> tuple[FrameFeatures, str]:
    """(the indexed features in entry order, the checkpoint they were made with)."""
    index = SearchIndex(folder)
    return index.features(), index.checkpoint


def shortlist(index: SearchIndex | FrameFeatures, query: torch.Tensor, rerank: int | None,
              pool: Pooler) -> FrameFeatures:
    """What search scores through EMCL: every video (``rerank`` None, or not below the video count), else the
    ``rerank`` best for ``query`` (D,) by the first stage, in index order. ``pool``: the model's pooling, used
    for features held in memory (a folder holds its own)."""
    if rerank is not None and rerank < 1:
        raise ConfigError(f"rerank must be at least 1, got {rerank}")
    query = torch.nn.functional.normalize(query.float().cpu(), dim=-1)
    if isinstance(index, SearchIndex):
        exact = rerank is None or rerank >= len(index.ids)
        return index.features(None if exact else index.candidates(query.numpy(), rerank))
    if rerank is None or rerank >= len(index.ids):
        return index
    cosine = pool(index.frames, index.mask).cpu() @ query  # (N,)
    keep = sorted(cosine.topk(rerank).indices.tolist())
    return FrameFeatures([index.ids[p] for p in keep], index.frames[keep], index.mask[keep])
