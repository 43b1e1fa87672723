"""The approximate first stage of search: FAISS over L2-normalised pooled video features.

Every video is one vector: the mean of its frame features as the retrieval scorer pools them before EMCL,
L2-normalised; a query is its text feature, L2-normalised, so the inner product is the cosine similarity
of the two features EMCL starts from. The first stage returns the ``rerank`` best candidates by that cosine;
search then scores only those through EMCL as evaluation does (``multitask.search_index``).

Index type, chosen by ``scripts/bench_search.py`` (numbers in the README): exact inner product
(``IndexFlatIP``) under ``Policy.flat_below`` videos, where scanning everything costs a few milliseconds;
above, IVF-Flat: a k-means coarse quantizer of about 4 sqrt(n) lists, each query scanning ``nprobe`` of them
(1/128 of the lists, at least 16). Vector ids are positions in the index's entry list (vectors are added in
entry order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from multitask.files import atomic_path

FILE = "ann.faiss"
DEFAULT_RERANK = 200  # candidates the first stage hands to the EMCL re-ranking
MIN_TRAIN_PER_LIST = 39  # FAISS's k-means warns below this many training vectors per centroid


@dataclass(frozen=True)
class Policy:
    """How the first stage is built for a library of n videos."""
    flat_below: int = 20_000  # exact inner product below this many videos
    lists_per_sqrt: float = 4.0  # IVF lists: lists_per_sqrt * sqrt(n); fewer lists than natural clusters lose recall
    probe_fraction: float = 1 / 128  # share of the lists each query scans (nprobe)
    min_probe: int = 16
    train_per_list: int = 64  # k-means training sample: this many vectors per list
    train_iters: int = 10
    regrow: float = 4.0  # retrain the quantizer when the library has grown this much since training

    def num_lists(self, n: int) -> int:
        """About ``lists_per_sqrt`` sqrt(n), but no more than k-means can train on n vectors."""
        return max(1, min(int(self.lists_per_sqrt * math.sqrt(n)), n // MIN_TRAIN_PER_LIST))

    def nprobe(self, num_lists: int) -> int:
        return min(num_lists, max(self.min_probe, math.ceil(self.probe_fraction * num_lists)))


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build(vectors: np.ndarray, policy: Policy, seed: int = 0) -> faiss.Index:
    """A first stage over ``vectors`` (n, D), L2-normalised rows, ids 0..n-1."""
    n, dim = vectors.shape
    if n < policy.flat_below:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = policy.num_lists(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter, index.cp.seed = policy.train_iters, seed
        sample = np.random.default_rng(seed).choice(n, min(n, policy.train_per_list * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = policy.nprobe(lists)
    add(index, vectors)
    return index


def add(index: faiss.Index, vectors: np.ndarray, chunk: int = 65_536) -> None:
    """Append ``vectors`` (ids continue from ``index.ntotal``), with a progress bar for large additions."""
    for start in tqdm(range(0, len(vectors), chunk), desc="first stage", leave=False, disable=len(vectors) < 4 * chunk):
        index.add(vectors[start: start + chunk])


def needs_rebuild(index: faiss.Index, total: int, policy: Policy, trained_on: int) -> bool:
    """Whether a library of ``total`` videos should get a new first stage instead of additions to ``index``:
    it crossed ``flat_below``, or grew ``regrow`` times past the size the IVF quantizer was trained on."""
    if isinstance(index, faiss.IndexFlat):
        return total >= policy.flat_below
    return total >= policy.regrow * trained_on


def search(index: faiss.Index, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, ids) of the ``count`` best vectors for each L2-normalised query row, best first; rows with
    fewer hits than ``count`` (an IVF scan that reached too few vectors) are padded with id -1."""
    return index.search(np.ascontiguousarray(query, dtype=np.float32), min(count, index.ntotal))


def save(index: faiss.Index, path: Path) -> None:
    """Write atomically: a reader sees the old index or the new one, never half of one."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def load(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))
