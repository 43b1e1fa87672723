"""A resumable on-disk index of per-frame video features for ``multitask search``.

Folder layout: ``index.json`` ({"checkpoint", "entries": [{"id", "path", "part"}], "failed": {path: reason}})
and ``part_<k>.safetensors`` ({"frames": (n, T, D), "mask": (n, T)}). Each batch is written as a new
part and then recorded in ``index.json`` (atomically), so an interrupted run loses at most one batch
and a re-run encodes only what is missing.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from multitask.data.video_index import VIDEO_EXTENSIONS
from multitask.decoding import DecoderSpec, probe_all
from multitask.errors import ConfigError, MissingInputError
from multitask.files import atomic_write_text
from multitask.types import FrameFeatures
from multitask.video_io import UnreadableVideoError, VideoInfo

Encoder = Callable[..., FrameFeatures]  # Model.encode_frames(paths, batch_size, progress=, infos=, root=)

META = "index.json"


def video_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise MissingInputError(f"video folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _read_meta(out: Path, checkpoint: str) -> dict:
    if not (out / META).is_file():
        return {"checkpoint": checkpoint, "entries": [], "failed": {}}
    meta = json.loads((out / META).read_text())
    if meta["checkpoint"] != checkpoint:
        raise ConfigError(f"index {out} was built with checkpoint {meta['checkpoint']}, not {checkpoint}: "
                         "use another --out folder")
    return meta


def _write_meta(out: Path, meta: dict) -> None:
    atomic_write_text(out / META, json.dumps(meta, indent=1))


def update_index(encode: Encoder, checkpoint: str, video_dir: Path, out: Path, decoder: DecoderSpec,
                 batch_size: int = 16) -> dict:
    """Encode every video under ``video_dir`` not yet in the index at ``out`` (with ``encode``, the
    ``encode_frames`` of the model ``checkpoint`` names); bad files are recorded.

    Returns {"added", "already", "failed": {path: reason}}.
    """
    out.mkdir(parents=True, exist_ok=True)
    video_dir = video_dir.expanduser().resolve()  # entries are absolute paths: `./clips` and `clips` agree
    meta = _read_meta(out, checkpoint)
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
        save_file({"frames": feats.frames.contiguous(), "mask": feats.mask.contiguous()},
                  str(out / f"part_{part}.safetensors"))
        meta["entries"] += [{"id": i, "path": p, "part": part} for i, p in zip(feats.ids, batch)]
        _write_meta(out, meta)
        part, added = part + 1, added + len(batch)
    meta["failed"] = bad
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


def load_index(folder: Path) -> tuple[FrameFeatures, str]:
    """(the indexed features in entry order, the checkpoint they were made with)."""
    if not (folder / META).is_file():
        raise MissingInputError(f"{folder} is not an index (no {META}); build one with `multitask index`")
    meta = json.loads((folder / META).read_text())
    parts = sorted({e["part"] for e in meta["entries"]})
    tensors = [load_file(str(folder / f"part_{k}.safetensors")) for k in parts]
    if not tensors:
        raise ConfigError(f"index {folder} holds no videos")
    frames = torch.cat([t["frames"] for t in tensors])  # (N, T, D)
    mask = torch.cat([t["mask"] for t in tensors])  # (N, T)
    return FrameFeatures([e["id"] for e in meta["entries"]], frames, mask), meta["checkpoint"]
