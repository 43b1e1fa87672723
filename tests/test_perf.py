"""multitask/perf.py: model FLOPs of a step (gradient caching's recomputation left out) and the cards' peaks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from multitask.perf import PEAK_TFLOPS, card_peak, peak_tflops, step_flops

SXM = dict(PEAK_TFLOPS)[("h100",)]


def test_flops_of_a_known_step_and_no_recomputation_counted():
    """Two bias-free layers, (4, 8) -> 16 -> 16: forward 2*4*8*16 + 2*4*16*16 FLOPs; backward the weight
    gradients of both and the input gradient of the second (the input needs none). Under multitask.backbone's
    checkpoint (gradient caching) the backward recomputes part of the forward: not counted."""
    import multitask.backbone as backbone

    first, second, x = nn.Linear(8, 16, bias=False), nn.Linear(16, 16, bias=False), torch.randn(4, 8)

    def layers(x: torch.Tensor) -> torch.Tensor:
        return second(torch.relu(first(x)))

    expected = 2 * 4 * 8 * 16 * 2 + 2 * 4 * 16 * 16 * 3
    assert step_flops(lambda: layers(x).sum().backward()) == expected
    assert step_flops(lambda: backbone.checkpoint(layers, x, use_reentrant=False).sum().backward()) == expected


def test_attention_flops_counted_on_the_cpu_as_on_the_math_path():
    q = torch.randn(2, 3, 10, 16, requires_grad=True)

    def attend() -> None:
        nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()

    fused = step_flops(attend)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        math = step_flops(attend)
    assert fused == math == 3 * (2 * (2 * 2 * 3 * 10 * 10 * 16))  # QK^T and PV forward; twice that backward


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", SXM), ("NVIDIA H200", SXM), ("NVIDIA H100 PCIe", dict(PEAK_TFLOPS)[("h100", "pcie")]),
    ("NVIDIA A100-SXM4-80GB", dict(PEAK_TFLOPS)[("a100",)]), ("NVIDIA L4", dict(PEAK_TFLOPS)[("l4",)]),
    ("NVIDIA L40S", dict(PEAK_TFLOPS)[("l40s",)]), ("NVIDIA A10G", None), ("cpu", None)])
def test_cards_are_matched_on_whole_words(name, expected):
    assert card_peak(name) == expected


def test_fp32_peak_follows_the_matmul_precision():
    previous = torch.get_float32_matmul_precision()
    try:
        assert (peak_tflops(SXM, "bf16"), peak_tflops(SXM, "fp16"), peak_tflops(SXM, "fp32")) == (989.4, 989.4, 66.9)
        torch.set_float32_matmul_precision("high")  # tf32 matrix products
        assert peak_tflops(SXM, "fp32") == 494.7
    finally:
        torch.set_float32_matmul_precision(previous)
    assert peak_tflops(None, "bf16") is None
