"""Time ``multitask.emcl.EMCL`` against its floor: the float32 matrix products it cannot avoid.

For an (N, D) input, K bases and ``iters`` iterations EMCL must do 2 * iters + 1 products: per iteration
x.t() @ lambda ((D, N) @ (N, K)) and x @ Y ((N, D) @ (D, K)), then lambda @ Y.t() ((N, K) @ (K, D)).
The floor runs exactly those products on preallocated tensors of the same shapes. EMCL is timed in
eval mode and train mode without autograd, and in train mode with a backward through the residual.
Every variant at every size runs in one round-robin whose start rotates each repeat, so load from other
processes hits all alike; medians over the repeats are reported.
The sweep varies one of N, D, K at a time around the headline size N=2048, D=512, K=32 and fits growth
exponents by least squares of log(time) on log(size): matmul cost is linear in each, so ~1 is ideal.

    python scripts/bench_emcl.py                       # full sweep, 15 repeats (a few minutes on 2 cores)
    python scripts/bench_emcl.py --quick --json /tmp/bench_emcl.json
    python scripts/bench_emcl.py --quick --threads 1   # without thread synchronisation (see below)

On a machine whose cores other jobs share, every op that runs on several threads may wait for a
descheduled worker thread; --threads 1 separates that cost from the arithmetic.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from multitask.emcl import EMCL

ITERS = 9
MODES = ("eval", "train", "backward")  # EMCL variants timed against the floor
Key = TypeVar("Key")


@dataclass(frozen=True)
class Size:
    n: int  # rows (samples)
    d: int  # feature dimensions
    k: int  # bases


@dataclass(frozen=True)
class Sweep:
    n: tuple[int, ...]
    d: tuple[int, ...]
    k: tuple[int, ...]
    repeats: int


HEADLINE = Size(2048, 512, 32)
FULL = Sweep(n=(256, 512, 1024, 2048, 4096, 8192), d=(128, 256, 512, 1024), k=(8, 16, 32, 64, 128), repeats=15)
QUICK = Sweep(n=(1024, 2048, 4096), d=(128, 256, 512), k=(8, 16, 32), repeats=7)


@dataclass
class FloorOperands:
    """Preallocated inputs and outputs of the floor's products for one size."""
    x: torch.Tensor  # (N, D)
    lam: torch.Tensor  # (N, K)
    y: torch.Tensor  # (D, K)
    y_out: torch.Tensor  # (D, K)
    lam_out: torch.Tensor  # (N, K)
    rec_out: torch.Tensor  # (N, D)


def floor_operands(x: torch.Tensor, k: int) -> FloorOperands:
    """Operands for x: (N, D) with k bases; lambda and Y hold unit-scale values like EMCL's."""
    (n, d), gen = x.shape, torch.Generator().manual_seed(1)
    lam = torch.randn(n, k, generator=gen) / n ** 0.5
    y = torch.rand(d, k, generator=gen) / d
    return FloorOperands(x, lam, y, torch.empty(d, k), torch.empty(n, k), torch.empty(n, d))


def matmul_floor(ops: FloorOperands, iters: int) -> None:
    """The 2 * iters + 1 products of EMCL's forward, written into preallocated outputs."""
    for _ in range(iters):
        torch.mm(ops.x.t(), ops.lam, out=ops.y_out)  # (D, N) @ (N, K) -> (D, K)
        torch.mm(ops.x, ops.y, out=ops.lam_out)  # (N, D) @ (D, K) -> (N, K)
    torch.mm(ops.lam, ops.y.t(), out=ops.rec_out)  # (N, K) @ (K, D) -> (N, D)


def emcl_variants(x: torch.Tensor, k: int, iters: int) -> dict[str, Callable[[], None]]:
    """One zero-argument call per mode in MODES, each on the same x: (N, D)."""
    gen = torch.Generator().manual_seed(0)
    eval_emcl = EMCL(num_bases=k, iters=iters, generator=gen).eval()
    train_emcl = EMCL(num_bases=k, iters=iters, generator=gen).train()
    leaf, grad = x.clone().requires_grad_(True), torch.ones_like(x)  # (N, D) each

    def run_eval() -> None:
        with torch.no_grad():
            eval_emcl(x)

    def run_train() -> None:
        with torch.no_grad():
            train_emcl(x)

    def run_backward() -> None:
        leaf.grad = None
        train_emcl(leaf).backward(grad)

    return {"eval": run_eval, "train": run_train, "backward": run_backward}


def interleaved_medians(fns: dict[Key, Callable[[], None]], repeats: int, warmup: int = 2) -> dict[Key, float]:
    """Median milliseconds per call of each function, timed round-robin with a rotating start, so a burst of
    load from other processes hits every function alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    keys, samples = list(fns), {key: [] for key in fns}
    for r in range(repeats):
        shift = r * len(keys) // repeats
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            fns[key]()
            samples[key].append(time.perf_counter() - start)
    return {key: 1e3 * statistics.median(times) for key, times in samples.items()}


def measure(sizes: list[Size], repeats: int, iters: int = ITERS) -> dict[Size, dict]:
    """Table rows: per size, floor and EMCL milliseconds and EMCL / floor per mode; all sizes interleaved."""
    fns: dict[tuple[Size, str], Callable[[], None]] = {}
    for size in sizes:
        x = torch.randn(size.n, size.d, generator=torch.Generator().manual_seed(0))  # (N, D)
        ops = floor_operands(x, size.k)
        fns[size, "floor"] = functools.partial(matmul_floor, ops, iters)
        fns.update({(size, mode): fn for mode, fn in emcl_variants(x, size.k, iters).items()})
    ms = interleaved_medians(fns, repeats)
    rows = {}
    for size in sizes:
        rows[size] = {**asdict(size), "floor_ms": ms[size, "floor"]}
        for mode in MODES:
            rows[size][f"{mode}_ms"], rows[size][f"{mode}_ratio"] = ms[size, mode], ms[size, mode] / ms[size, "floor"]
    return rows


def growth_exponent(sizes: list[int], times: list[float]) -> float:
    """Least-squares slope of log(time) on log(size): time ~ c * size ** slope."""
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def sweep_sizes(sweep: Sweep, head: Size) -> dict[str, list[Size]]:
    """Per axis, the sizes varying that axis around the headline (which every axis includes)."""
    return {"n": [Size(n, head.d, head.k) for n in sorted({*sweep.n, head.n})],
            "d": [Size(head.n, d, head.k) for d in sorted({*sweep.d, head.d})],
            "k": [Size(head.n, head.d, k) for k in sorted({*sweep.k, head.k})]}


def run(quick: bool) -> dict:
    """Measure the sweep; the summary dict holds the headline numbers, exponents and table rows."""
    sweep, head = (QUICK if quick else FULL), HEADLINE
    axes = sweep_sizes(sweep, head)
    unique = list(dict.fromkeys(s for sizes in axes.values() for s in sizes))
    rows = measure(unique, sweep.repeats)
    out = {"time_over_floor": rows[head]["eval_ratio"], "time_over_floor_train": rows[head]["train_ratio"],
           "time_over_floor_backward": rows[head]["backward_ratio"], "headline": asdict(head), "iters": ITERS,
           "threads": torch.get_num_threads(), "repeats": sweep.repeats, "quick": quick}
    for axis, sizes in axes.items():
        values = [getattr(s, axis) for s in sizes]
        out[f"growth_exponent_{axis}"] = growth_exponent(values, [rows[s]["eval_ms"] for s in sizes])
        out[f"floor_growth_exponent_{axis}"] = growth_exponent(values, [rows[s]["floor_ms"] for s in sizes])
    out["rows"] = list(rows.values())
    return out


def format_report(result: dict) -> str:
    """The table (milliseconds; ratio = EMCL / floor per mode) and the fitted exponents."""
    head = f"{'N':>6} {'D':>5} {'K':>4} {'floor ms':>9}" + "".join(f" {m + ' ms':>12} {'ratio':>6}" for m in MODES)
    lines = [head]
    for r in result["rows"]:
        cells = "".join(f" {r[f'{m}_ms']:12.2f} {r[f'{m}_ratio']:6.2f}" for m in MODES)
        lines.append(f"{r['n']:6d} {r['d']:5d} {r['k']:4d} {r['floor_ms']:9.2f}{cells}")
    lines.append("growth exponents (log-log least squares; 1 = linear):")
    for axis in ("n", "d", "k"):
        lines.append(f"  {axis.upper()}: emcl eval {result[f'growth_exponent_{axis}']:.2f}, "
                     f"floor {result[f'floor_growth_exponent_{axis}']:.2f}")
    h = result["headline"]
    lines.append(f"headline N={h['n']} D={h['d']} K={h['k']} iters={result['iters']}: time_over_floor "
                 f"{result['time_over_floor']:.2f} (train {result['time_over_floor_train']:.2f}, backward "
                 f"{result['time_over_floor_backward']:.2f}), growth_exponent_n {result['growth_exponent_n']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (~30-60 s on 2 cores)")
    parser.add_argument("--json", type=Path, help="also write the summary and rows to this JSON file")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own default)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args.quick)
    print(f"torch {torch.__version__}, {result['threads']} threads, median of {result['repeats']} repeats")
    print(format_report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
