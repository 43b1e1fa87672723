"""The approximate first stage of search (multitask/ann.py) and the index folder around it (search_index.py):
recall against exact search, growth of an index, interrupted runs, old folders, bad input."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DECODER
from safetensors.torch import load_file, save_file

from multitask import ann
from multitask.cli import main as cli_main
from multitask.search_index import FORMAT, META, SearchIndex, load_index, shortlist, update_index
from multitask.types import FrameFeatures

DIM, FRAMES = 16, 3


def clustered(n: int, seed: int, spread: float = 1.0, dim: int = DIM) -> np.ndarray:
    """(n, dim) unit rows around n / 50 random centres (the same centres for every seed)."""
    rng = np.random.default_rng(seed)
    centres = ann.normalise(np.random.default_rng(99).standard_normal((max(1, n // 50), dim)))
    noise = spread / dim ** 0.5 * rng.standard_normal((n, dim))
    return ann.normalise(centres[rng.integers(0, len(centres), n)] + noise)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_ivf_first_stage_finds_the_exact_neighbours():
    videos, queries = clustered(6000, 0, dim=64), clustered(50, 1, spread=1.5, dim=64)
    policy = ann.Policy(flat_below=1000)
    index = ann.build(videos, policy)
    assert index.nlist == policy.num_lists(6000) == 153 and index.nprobe == 16  # min(4 sqrt(n), n / 39) lists
    found = ann.search(index, queries, 10)[1]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact_top(videos, queries, 10))])
    assert recall >= 0.95
    flat = ann.build(videos[:900], policy)
    assert not hasattr(flat, "nlist")
    assert (ann.search(flat, queries, 10)[1] == exact_top(videos[:900], queries, 10)).all()


def test_when_the_first_stage_is_built_anew():
    policy = ann.Policy(flat_below=100, regrow=4.0)
    flat, ivf = ann.build(clustered(50, 0), policy), ann.build(clustered(200, 0), policy)
    assert not ann.needs_rebuild(flat, 99, policy, trained_on=0) and ann.needs_rebuild(flat, 100, policy, 0)
    assert not ann.needs_rebuild(ivf, 799, policy, trained_on=200) and ann.needs_rebuild(ivf, 800, policy, 200)


def fake_encode(paths, batch_size, progress=False, infos=None, root=None) -> FrameFeatures:
    """Deterministic per-frame features from the file name (no model): video<k> gets cluster k % 4."""
    ids = [Path(p).stem for p in paths]
    frames = torch.stack([torch.from_numpy(clustered(FRAMES, int(i[5:]) * 7 + 1)) + 2 * F.one_hot(
        torch.tensor(int(i[5:]) % 4), DIM).float() for i in ids])  # (n, T, D)
    return FrameFeatures(ids, frames, torch.ones(len(ids), FRAMES, dtype=torch.long))


def pool(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.normalize(frames.mean(dim=1), dim=-1)


@pytest.fixture
def videos(tiny_root, tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    for k in range(10):
        shutil.copy(tiny_root / "videos" / "all" / f"video{k}.mp4", folder)
    return folder


def build(videos: Path, out: Path, names: range, policy: ann.Policy = ann.Policy(flat_below=1)) -> dict:
    """Index the videos ``names`` of ``videos`` (others are hidden in a subfolder the index does not see)."""
    source = out.parent / f"{out.name}-source"
    source.mkdir(exist_ok=True)
    for k in names:
        if not (source / f"video{k}.mp4").exists():
            shutil.copy(videos / f"video{k}.mp4", source)
    return update_index(fake_encode, pool, "ckpt", source, out, DECODER, batch_size=3, policy=policy)


def test_index_grows_and_candidates_match_brute_force(videos, tmp_path):
    out = tmp_path / "index"
    assert build(videos, out, range(6))["added"] == 6
    assert build(videos, out, range(10))["added"] == 4
    meta = json.loads((out / META).read_text())
    assert meta["format"] == FORMAT and meta["dim"] == DIM and meta["ann"] == {"trained_on": 6}
    index = SearchIndex(out)
    assert ann.load(out / ann.FILE).ntotal == 10
    pooled = pool(index.features().frames, index.features().mask).numpy()
    query = ann.normalise(pooled[7:8] + 0.1)[0]
    best = np.argsort(-(pooled @ query), kind="stable")[:4]
    assert index.candidates(query, 4) == sorted(best.tolist())  # 10 vectors: every list is probed
    chosen = shortlist(index, torch.from_numpy(query), 4, pool)
    assert chosen.ids == [index.ids[p] for p in sorted(best.tolist())]
    assert torch.equal(chosen.frames, index.features(sorted(best.tolist())).frames)
    assert shortlist(index, torch.from_numpy(query), None, pool).ids == index.ids  # exact: everything


def test_entries_an_interrupted_run_left_out_of_the_first_stage_are_still_found(videos, tmp_path):
    out = tmp_path / "index"
    build(videos, out, range(4))
    stale = ann.load(out / ann.FILE)
    build(videos, out, range(10))
    ann.save(stale, out / ann.FILE)  # as if killed after the new parts, before the first stage was written
    index = SearchIndex(out)
    pooled = pool(index.features().frames, index.features().mask).numpy()
    for target in (2, 8):
        assert target in index.candidates(pooled[target], 1)
    build(videos, out, range(10))  # the next run catches up without adding videos
    assert ann.load(out / ann.FILE).ntotal == 10
    (out / ann.FILE).unlink()  # as if the first run was killed before it wrote the first stage
    assert SearchIndex(out).candidates(pooled[8], 1) == [8]


def test_old_index_folders_are_searched_exactly_and_upgraded_in_place(videos, tmp_path):
    out = tmp_path / "index"
    build(videos, out, range(5))
    before = load_index(out)[0]
    meta = json.loads((out / META).read_text())
    for key in ("format", "dim", "ann"):
        del meta[key]
    (out / META).write_text(json.dumps(meta))
    for part in out.glob("part_*.safetensors"):
        tensors = load_file(str(part))
        save_file({"frames": tensors["frames"], "mask": tensors["mask"]}, str(part))
    (out / ann.FILE).unlink()
    old = SearchIndex(out)
    assert old.dim == DIM and torch.equal(old.features().frames, before.frames)
    with pytest.raises(ValueError, match=r"no approximate first stage .* run `multitask index VIDEO_DIR "
                                         r"--checkpoint ckpt --out .*index` once .* or search it exactly"):
        shortlist(old, torch.ones(DIM), 2, pool)
    assert build(videos, out, range(5))["added"] == 0
    upgraded = SearchIndex(out)
    assert upgraded.format == FORMAT and len(upgraded.candidates(np.ones(DIM, np.float32) / 4, 2)) == 2


def test_bad_search_input_is_one_clear_line(tmp_path, capsys):
    assert cli_main(["search", str(tmp_path / "missing"), "a query"]) == 2
    assert "is not an index (no index.json); build one with `multitask index`" in capsys.readouterr().err
    feats = fake_encode(["video1.mp4", "video2.mp4"], 2)
    with pytest.raises(ValueError, match="rerank must be at least 1"):
        shortlist(feats, torch.ones(DIM), 0, pool)
    assert shortlist(feats, feats.frames[1, 0], 1, pool).ids == ["video2"]
