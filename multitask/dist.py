"""Collective helpers: the only module that talks to torch.distributed; and the tie of a worker to its launcher."""
from __future__ import annotations

import ctypes
import os
import signal
import sys

import torch
import torch.distributed as dist

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_launcher() -> None:
    """Under a launcher (``accelerate launch``/torchrun set LOCAL_RANK; it is this process's parent), have Linux
    SIGKILL this worker when the launcher dies. torchrun starts each worker in a session of its own, so a
    launcher killed by SIGKILL (the OOM killer, ``kill -9``) would otherwise leave its workers training on,
    writing into the run directory that the next run resumes from."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != launcher:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the summed gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # x: (B_local, ...)
        out, sizes = _gather_cat(x)
        ctx.rank, ctx.sizes = rank(), sizes
        return out  # (B_global, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss depends on every rank's features
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]]


def _gather_cat(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate x (B_local, ...) from all ranks; local sizes may differ. Returns (out, sizes)."""
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes_t = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    padded = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]), sizes


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from every rank along dim 0 in rank order, without gradient (evaluation)."""
    return x if world_size() == 1 else _gather_cat(x)[0]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from every rank along dim 0, in rank order, keeping the autograd graph.

    Local batches may differ in size. The gradient of a loss that every rank computes identically
    on the gathered tensor is summed across ranks, so with DDP's gradient averaging each rank ends
    with the gradient of the global loss.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def assert_same_on_all_ranks(t: torch.Tensor, name: str, atol: float = 1e-6) -> None:
    """Raise if a tensor (e.g. the EMCL running mean) differs between ranks."""
    if world_size() == 1:
        return
    ref = t.detach().clone()
    dist.broadcast(ref, src=0)
    if not torch.allclose(ref, t.detach(), atol=atol):
        raise RuntimeError(f"{name} differs between ranks (rank {rank()}): distributed state went out of sync")


def local_offset(n: int) -> int:
    """Index of this rank's first row in a rank-ordered concatenation of per-rank blocks of n rows."""
    if world_size() == 1:
        return 0
    sizes = [None] * world_size()
    dist.all_gather_object(sizes, n)
    return sum(sizes[: rank()])


def broadcast_object(value: object) -> object:
    """Rank 0's ``value`` on every rank (picklable objects: a tokenizer proto, a vocabulary)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(values: list) -> list:
    """Concatenate per-rank lists (e.g. generated captions) in rank order, on every rank."""
    if world_size() == 1:
        return list(values)
    parts = [None] * world_size()
    dist.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]


def global_sum(value: float) -> float:
    """Sum of a number over all ranks (no gradient)."""
    if world_size() == 1:
        return value
    box = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(box)
    return float(box.item())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average each number over all ranks (same keys on every rank, in the same order)."""
    if world_size() == 1 or not values:
        return values
    box = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(box)
    return dict(zip(values, (box / world_size()).tolist()))
