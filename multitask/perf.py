"""Measuring training speed: a step's model FLOPs, the card's peak, and which attention kernels ran.

Model FLOPs utilisation (MFU) = model FLOPs of a step / step time / the card's dense peak. ``step_flops`` counts
with ``torch.utils.flop_counter.FlopCounterMode``: the matrix products, convolutions and attention of everything
the step runs, forward and backward, from their shapes (2 FLOPs per multiply-add; element-wise operations,
softmax and normalisation count zero, as is usual for MFU; attention as its math path computes it, whichever
kernel runs). Gradient caching (``trainer.contrastive_chunks``) recomputes encoder activations in the backward;
that repeat is hardware work, not model work, and is left out, so a chunked step has the unchunked one's FLOPs.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

aten = torch.ops.aten


def _attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)  # Q K^T and P V


def _attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return 2 * flop_counter.sdpa_flop_count(query, key, value)  # the gradients of both products' two operands


# Attention counted as the math path computes it, whichever kernel runs: torch counts the CPU's fused kernel not at
# all (the test suite's runs), and the CUDA kernels' backward with the Q K^T that flash-style kernels recompute
ATTENTION_FLOPS = {aten._scaled_dot_product_flash_attention_for_cpu: _attention,
                   **dict.fromkeys([aten._scaled_dot_product_flash_attention_for_cpu_backward,
                                    aten._scaled_dot_product_flash_attention_backward,
                                    aten._scaled_dot_product_efficient_attention_backward,
                                    aten._scaled_dot_product_cudnn_attention_backward], _attention_backward)}


def _counter() -> flop_counter.FlopCounterMode:
    return flop_counter.FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS)


def step_flops(step: Callable[[], object]) -> int:
    """Model FLOPs of ``step()`` (a forward and backward): all it runs, less what gradient caching recomputes in
    the backward (each ``checkpoint`` call of ``multitask.backbone`` gets a counter for its recomputation)."""
    recomputed: list[flop_counter.FlopCounterMode] = []

    def contexts() -> tuple[contextlib.AbstractContextManager, flop_counter.FlopCounterMode]:
        recomputed.append(_counter())
        return contextlib.nullcontext(), recomputed[-1]  # (around the forward, around the recomputation)

    def counted(fn: Callable, *args, **kwargs):
        return checkpoint(fn, *args, context_fn=contexts, **kwargs)

    with mock.patch("multitask.backbone.checkpoint", counted), _counter() as total:
        step()
    return total.get_total_flops() - sum(counter.get_total_flops() for counter in recomputed)


@dataclass(frozen=True)
class Peak:
    """Dense peak TFLOP/s: bf16 and fp16 on tensor cores, tf32 on tensor cores, fp32 without them."""
    half: float
    tf32: float
    fp32: float


# NVIDIA's datasheets, dense (their headline tensor-core numbers are with 2:4 sparsity: twice these). Matched on
# the words of torch.cuda.get_device_name(), most specific first: the H100 SXM is "NVIDIA H100 80GB HBM3",
# the PCIe card "NVIDIA H100 PCIe"; an A10G is not an A10.
PEAK_TFLOPS: tuple[tuple[tuple[str, ...], Peak], ...] = (
    (("h100", "pcie"), Peak(756.5, 378.0, 51.2)),
    (("h100", "nvl"), Peak(835.5, 417.5, 60.0)),
    (("h100",), Peak(989.4, 494.7, 66.9)),  # SXM5
    (("h200", "nvl"), Peak(835.5, 417.5, 60.0)),
    (("h200",), Peak(989.4, 494.7, 66.9)),  # SXM
    (("a100",), Peak(312.0, 156.0, 19.5)),  # SXM4 and PCIe, 40 and 80 GB
    (("l40s",), Peak(362.05, 183.0, 91.6)),
    (("l4",), Peak(121.0, 60.0, 30.3)),
    (("a10",), Peak(125.0, 62.5, 31.2)),
)


def card_peak(device_name: str) -> Peak | None:
    """The dense peaks of a card by its name, None for a card (or CPU) not in ``PEAK_TFLOPS``."""
    words = set(re.split(r"[\s_-]+", device_name.lower()))
    return next((peak for names, peak in PEAK_TFLOPS if set(names) <= words), None)


def peak_tflops(peak: Peak | None, precision: str) -> float | None:
    """The peak that bounds a step in ``precision`` (fp32 | bf16 | fp16): fp32 matrix products run on the tf32
    tensor cores only when ``torch.set_float32_matmul_precision`` allows it (PyTorch's default does not)."""
    if peak is None:
        return None
    if precision != "fp32":
        return peak.half
    return peak.fp32 if torch.get_float32_matmul_precision() == "highest" else peak.tf32


# forward attention kernels by the aten operator F.scaled_dot_product_attention dispatches to; the math path
# shows as its _safe_softmax (no other code here calls it); nn.MultiheadAttention's inference fast path as its own
ATTENTION_KERNELS = {
    "aten._scaled_dot_product_flash_attention": "flash",
    "aten._scaled_dot_product_efficient_attention": "efficient",
    "aten._scaled_dot_product_cudnn_attention": "cudnn",
    "aten._scaled_dot_product_flash_attention_for_cpu": "fused (cpu)",
    "aten._safe_softmax": "math",
    "aten._native_multi_head_attention": "native MHA",
}


class AttentionKernels(TorchDispatchMode):
    """Counts the attention kernels that run inside it: ``counts`` = {kind: calls}, kinds of ``ATTENTION_KERNELS``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = ATTENTION_KERNELS.get(str(func.overloadpacket))
        if kind is not None:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        return func(*args, **(kwargs or {}))
