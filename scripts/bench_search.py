"""Benchmark the first stage of ``multitask search`` (``multitask.ann``) on synthetic libraries.

Features: ``n`` L2-normalised D-dimensional vectors (D 512, ViT-B's) drawn from a mixture of n / 100 Gaussian
clusters ("videos of one kind"; a video's cosine to its cluster centre about 0.7), and queries drawn around
the same centres with more noise (cosine to the centre about 0.55: text features sit farther from the videos
than videos from each other). Per size and index type: build time, index size (bytes the index holds, as
written to disk), growth of the process's resident memory while building, single-query latency p50 / p95
over ``--queries`` queries (one at a time, as search runs them), recall@10 against the exact top 10 by
inner product, and the share of that exact top 10 among the approximate top 200 (the candidates search hands to
EMCL by default). Also timed once: the EMCL re-ranking of 200 candidates of 12 frames (a fresh EMCL, 32 bases,
9 iterations, blocks of 64 as evaluation), which search adds to the first stage whatever the library size.

    python scripts/bench_search.py                                  # 10k, 100k, 1M: the framework's policy
    python scripts/bench_search.py --sizes 100000 --kinds flat ivf-flat hnsw ivf-pq   # the index types compared
    python scripts/bench_search.py --sizes 1000000 --nprobe 16 32 64 128              # recall against scan cost
    python scripts/bench_search.py --quick --json /tmp/bench_search.json             # seconds
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import psutil
import torch

from multitask import ann
from multitask.emcl import EMCL
from multitask.similarity import VideoTextScorer

PER_CLUSTER, SPREAD, QUERY_SPREAD = 100, 1.0, 1.5
FULL_SIZES, QUICK_SIZES = (10_000, 100_000, 1_000_000), (2_000, 8_000)
QUICK_POLICY = ann.Policy(flat_below=4_000)  # so that --quick builds both an exact and an IVF first stage
CHUNK = 100_000  # rows generated at a time
BUILD_THREADS = faiss.omp_get_max_threads()
# One query at a time gains nothing from more threads on this size of work, and on a busy machine the OpenMP
# threads of FAISS and torch spin-waiting for each other cost far more (EMCL re-ranking: 4 ms on one thread,
# 150-600 ms on two while other jobs held the cores); queries and re-ranking are timed on one thread.
QUERY_THREADS = 1


@dataclass
class Row:
    size: int
    kind: str
    index: str  # what was built, with its parameters
    build_s: float
    index_mb: float
    rss_growth_mb: float
    p50_ms: float
    p95_ms: float
    recall_at_10: float
    recall_10_in_rerank: float  # share of the exact top 10 among the approximate top DEFAULT_RERANK (what EMCL sees)


def clustered(n: int, centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """(n, D) unit rows: a random centre each, plus isotropic noise of norm ~``spread``."""
    out = np.empty((n, centres.shape[1]), np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        noise = rng.standard_normal((m, centres.shape[1]), dtype=np.float32) * (spread / centres.shape[1] ** 0.5)
        out[start: start + m] = ann.normalise(centres[rng.integers(0, len(centres), m)] + noise)
    return out


def library(n: int, dim: int, num_queries: int, spreads: tuple[float, float] = (SPREAD, QUERY_SPREAD),
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(videos (n, D), queries (num_queries, D)), both L2-normalised, with noise of norm ``spreads``."""
    rng = np.random.default_rng(seed)
    centres = ann.normalise(rng.standard_normal((max(1, n // PER_CLUSTER), dim), dtype=np.float32))
    return clustered(n, centres, spreads[0], rng), clustered(num_queries, centres, spreads[1], rng)


def build_kind(kind: str, videos: np.ndarray, policy: ann.Policy) -> faiss.Index:
    """``auto``: what ``multitask index`` builds; the others force one type (IVF ones with the policy's lists)."""
    n, dim = videos.shape
    if kind == "auto":
        return ann.build(videos, policy)
    if kind == "flat":
        return ann.build(videos, replace(policy, flat_below=n + 1))
    if kind == "ivf-flat":
        return ann.build(videos, replace(policy, flat_below=0))
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction, index.hnsw.efSearch = 80, 64
        index.add(videos)
        return index
    lists = policy.num_lists(n)  # ivf-pq: 64 sub-quantizers of 8 bits, then exact inner products of 4x the hits
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, 64, 8, faiss.METRIC_INNER_PRODUCT)
    ivf.nprobe = policy.nprobe(lists)
    index = faiss.IndexRefineFlat(ivf)
    index.k_factor = 4
    index.train(videos[np.random.default_rng(0).choice(n, min(n, 256 * lists), replace=False)])
    index.add(videos)
    return index


def describe(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexIVF):
        return f"IVF-Flat nlist={index.nlist} nprobe={index.nprobe}"
    if isinstance(index, faiss.IndexHNSWFlat):
        return f"HNSW-Flat M=32 efSearch={index.hnsw.efSearch}"
    if isinstance(index, faiss.IndexRefineFlat):
        ivf = faiss.extract_index_ivf(index)
        return f"IVF-PQ64x8 nlist={ivf.nlist} nprobe={ivf.nprobe} + refine x{index.k_factor:g}"
    return "Flat (exact)"


def index_megabytes(index: faiss.Index) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ann.save(index, Path(tmp) / ann.FILE)
        return (Path(tmp) / ann.FILE).stat().st_size / 2**20


def latencies_ms(index: faiss.Index, queries: np.ndarray, k: int = 10) -> tuple[list[float], np.ndarray]:
    """(per-query milliseconds, the ids found (Q, k)), one query at a time, on one thread."""
    faiss.omp_set_num_threads(QUERY_THREADS)
    times, found = [], []
    for row in queries:
        start = time.perf_counter()
        _, ids = ann.search(index, row[None], k)
        times.append(1e3 * (time.perf_counter() - start))
        found.append(ids[0])
    faiss.omp_set_num_threads(BUILD_THREADS)
    return times, np.stack(found)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top k that its approximate top k' (k' >= k) holds."""
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def measure(kind: str, videos: np.ndarray, queries: np.ndarray, exact: np.ndarray, policy: ann.Policy,
            nprobes: list[int]) -> list[Row]:
    """One row per ``nprobes`` value for an IVF index (its own nprobe when none), one row for the others."""
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    index = build_kind(kind, videos, policy)
    build_s = time.perf_counter() - start
    growth = (psutil.Process().memory_info().rss - rss) / 2**20
    size_mb = index_megabytes(index)
    ivf = faiss.try_extract_index_ivf(index)
    rows = []
    for nprobe in (nprobes if ivf is not None and nprobes else [None]):
        if nprobe is not None:
            ivf.nprobe = nprobe
        times, found = latencies_ms(index, queries)
        shortlisted = ann.search(index, queries, ann.DEFAULT_RERANK)[1]
        rows.append(Row(len(videos), kind, describe(index), round(build_s, 2), round(size_mb, 1), round(growth, 1),
                        round(statistics.median(times), 3), round(float(np.percentile(times, 95)), 3),
                        round(recall(found, exact), 4), round(recall(shortlisted, exact), 4)))
    return rows


def rerank_ms(candidates: int = 200, frames: int = 12, dim: int = 512, repeats: int = 20) -> float:
    """Median milliseconds of scoring ``candidates`` videos for one query through a fresh EMCL, blockwise."""
    gen = torch.Generator().manual_seed(0)
    scorer = VideoTextScorer(EMCL(generator=gen).eval(), "mean", reference_compat=False)
    text, video = torch.randn(1, dim, generator=gen), torch.randn(candidates, frames, dim, generator=gen)
    mask = torch.ones(candidates, frames, dtype=torch.long)
    threads = torch.get_num_threads()
    torch.set_num_threads(QUERY_THREADS)
    try:
        return timed_median(lambda: scorer.blockwise(text, video, mask, 64), repeats)
    finally:
        torch.set_num_threads(threads)


def timed_median(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return round(statistics.median(times), 3)


def table(rows: list[Row]) -> str:
    lines = ["| videos | index | build s | index MB | RSS growth MB | p50 ms | p95 ms | recall@10 | "
             f"top 10 in top {ann.DEFAULT_RERANK} |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.size:,} | {r.index} | {r.build_s:.1f} | {r.index_mb:.0f} | {r.rss_growth_mb:.0f} | "
              f"{r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.recall_at_10:.3f} | {r.recall_10_in_rerank:.3f} |" for r in rows]
    return "\n".join(lines)


def run(sizes: tuple[int, ...], kinds: list[str], dim: int, num_queries: int, policy: ann.Policy,
        nprobes: list[int], spreads: tuple[float, float]) -> dict:
    rows = []
    for size in sizes:
        videos, queries = library(size, dim, num_queries, spreads)
        exact = faiss.knn(queries, videos, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
        for kind in kinds:
            for row in measure(kind, videos, queries, exact, policy, nprobes):
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
        del videos
    return {"dim": dim, "queries": num_queries, "spreads": spreads, "build_threads": BUILD_THREADS,
            "query_threads": QUERY_THREADS, "policy": asdict(policy), "rows": [asdict(r) for r in rows],
            "rerank_200_ms": rerank_ms(dim=dim)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help=f"library sizes (default {FULL_SIZES})")
    parser.add_argument("--kinds", nargs="+", default=["auto"], choices=["auto", "flat", "ivf-flat", "hnsw", "ivf-pq"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[], help="IVF indexes: time these nprobe values "
                                                                           "(default: the policy's)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--spread", type=float, nargs=2, default=[SPREAD, QUERY_SPREAD], metavar=("VIDEO", "QUERY"),
                        help="noise norms around the cluster centres (larger: neighbours set by noise, not clusters)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, 50 queries, exact below 4,000")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES))
    policy = QUICK_POLICY if args.quick else ann.Policy()
    result = run(sizes, args.kinds, args.dim, 50 if args.quick else args.queries, policy, args.nprobe,
                 tuple(args.spread))
    print(table([Row(**r) for r in result["rows"]]))
    print(f"EMCL re-ranking of 200 candidates: {result['rerank_200_ms']:.1f} ms (median); built on "
          f"{BUILD_THREADS} threads, queried on {QUERY_THREADS}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
