import math

import pytest
import torch

from multitask.emcl import EMCL, emcl_similarity, reference_init


def loop_reference(x: list[list[float]], m: list[float], iters: int, sigma: float, beta: float):
    """Scalar re-statement of Algorithm 1 (docs/architecture.md, "The EMCL bridge"), independent of the tensor code."""
    n, d, k = len(x), len(x[0]), len(m)
    lam = [[m[j] for j in range(k)] for _ in range(n)]
    for _ in range(iters):
        y = []
        for a in range(d):
            logits = [sum(x[i][a] * lam[i][j] for i in range(n)) / sigma for j in range(k)]
            top = max(logits)
            e = [math.exp(v - top) for v in logits]
            y.append([v / sum(e) for v in e])
        col = [sum(y[a][j] for a in range(d)) for j in range(k)]
        y = [[y[a][j] / (1e-6 + col[j]) for j in range(k)] for a in range(d)]
        lam = [[sum(x[i][a] * y[a][j] for a in range(d)) for j in range(k)] for i in range(n)]
        norm = [math.sqrt(sum(lam[i][j] ** 2 for i in range(n))) for j in range(k)]
        lam = [[lam[i][j] / (1e-6 + norm[j]) for j in range(k)] for i in range(n)]
    out = [[beta * sum(lam[i][j] * y[a][j] for j in range(k)) + x[i][a] for a in range(d)] for i in range(n)]
    new_m = [sum(lam[i][j] for i in range(n)) / n for j in range(k)]
    return out, new_m


def test_single_base_by_hand():
    # K=1: Y is 1/D everywhere, lambda = row means normalised over rows = [1/sqrt2, 1/sqrt2].
    emcl = EMCL(num_bases=1, iters=1, beta=3.0, momentum=0.9)
    emcl.mean.fill_(1.0)
    x = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    out = emcl(x)
    expected = x + 3.0 * (1 / math.sqrt(2)) * 0.5
    assert torch.allclose(out, expected, atol=1e-5)
    assert emcl.mean.item() == pytest.approx(0.9 * 1.0 + 0.1 / math.sqrt(2), abs=1e-5)


@pytest.mark.parametrize("iters,sigma", [(1, 1.0), (9, 1.0), (4, 0.5)])
def test_matches_scalar_reference(iters, sigma):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g)
    emcl = EMCL(num_bases=3, iters=iters, sigma=sigma, beta=3.0, momentum=0.9)
    emcl.mean.copy_(torch.tensor([1.0, -1.0, 0.5]))
    out = emcl(x)
    ref_out, ref_m = loop_reference(x.tolist(), [1.0, -1.0, 0.5], iters, sigma, 3.0)
    assert torch.allclose(out, torch.tensor(ref_out), atol=1e-5)
    expected_m = [0.9 * m + 0.1 * r for m, r in zip([1.0, -1.0, 0.5], ref_m)]
    assert torch.allclose(emcl.mean, torch.tensor(expected_m), atol=1e-5)


def test_output_uses_old_mean_and_eval_leaves_it():
    x = torch.randn(6, 8)
    emcl = EMCL(num_bases=4, iters=3)
    before = emcl.mean.clone()
    emcl.eval()
    eval_out = emcl(x)
    assert torch.equal(emcl.mean, before)
    emcl.train()
    train_out = emcl(x)
    assert torch.allclose(train_out, eval_out)  # same M used for the output
    assert not torch.allclose(emcl.mean, before)


def test_gradient_only_through_residual():
    x = torch.randn(6, 8, requires_grad=True)
    EMCL(num_bases=4)(x).sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


def test_mean_is_buffer_in_state_dict():
    emcl = EMCL(num_bases=5)
    emcl(torch.randn(4, 3))
    restored = EMCL(num_bases=5)
    restored.load_state_dict(emcl.state_dict())
    assert torch.equal(restored.mean, emcl.mean)


def test_reference_init_is_plus_minus_one():
    m = reference_init(32, torch.Generator().manual_seed(0))
    assert m.shape == (32,)
    assert torch.allclose(m.abs(), torch.ones(32), atol=1e-4)


def test_rejects_non_2d():
    for emcl in (EMCL(), EMCL().eval()):
        for shape in ((5,), (2, 3, 4), (2, 3, 4, 5)):
            with pytest.raises(ValueError, match="2-D"):
                emcl(torch.randn(*shape))
    with pytest.raises(ValueError, match="eval mode"):
        EMCL().forward_sets(torch.randn(2, 3, 4))  # the mean update needs one set
    with pytest.raises(ValueError, match="3-D"):
        EMCL().eval().forward_sets(torch.randn(3, 4))


def test_batch_of_sets_equals_one_call_per_set():
    emcl = EMCL(num_bases=5).eval()
    sets = torch.randn(3, 10, 6)
    expected = torch.stack([emcl(s) for s in sets])
    assert torch.allclose(emcl.forward_sets(sets), expected, atol=1e-6)
    assert not torch.allclose(expected[0], emcl(sets.flatten(0, 1))[:10], atol=1e-3)  # sets are independent


def test_float32_iterations_under_autocast():
    x = torch.randn(8, 16)
    emcl = EMCL(num_bases=4).eval()
    full = emcl(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = emcl(x.bfloat16())
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), full, atol=0.05)


def test_emcl_similarity_out_of_the_box():
    text, video = torch.randn(3, 8), torch.randn(4, 8)
    sim = emcl_similarity(text, video, seed=1, num_bases=4)
    assert sim.shape == (3, 4)
    assert torch.equal(sim, emcl_similarity(text, video, seed=1, num_bases=4))
    emcl = EMCL(num_bases=4, generator=torch.Generator().manual_seed(1)).eval()
    stacked = torch.cat([torch.nn.functional.normalize(video, dim=-1), torch.nn.functional.normalize(text, dim=-1)])
    out = torch.nn.functional.normalize(emcl(stacked), dim=-1)
    assert torch.allclose(sim, out[4:] @ out[:4].t(), atol=1e-6)
    with pytest.raises(ValueError):
        emcl_similarity(torch.randn(3, 8), torch.randn(4, 7))
