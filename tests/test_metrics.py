"""Hand-computed checks for multitask.metrics."""

import math

import numpy as np
import pytest
import torch

from multitask import metrics
from multitask.metrics import (
    attribute_probes,
    dual_softmax,
    format_table,
    inverted_softmax,
    multi_caption_metrics,
    retrieval_metrics,
)

KEYS = ["R@1", "R@5", "R@10", "R@50", "MdR", "MnR"]

# Row 0 ties its true score (0.5) with exactly one other column, none above:
# 0-based rank uniform over {0, 1} -> expected 1-based rank 1.5, P(rank<1) = 0.5.
TIE = np.array([[0.5, 0.5, 0.125], [0.25, 0.75, 0.375], [0.125, 0.25, 0.875]])


def _check(got: dict, want: dict) -> None:
    assert list(got) == KEYS
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
        assert type(got[key]) is float


def test_identity_is_perfect():
    _check(retrieval_metrics(np.eye(3)),
           {"R@1": 100, "R@5": 100, "R@10": 100, "R@50": 100, "MdR": 1, "MnR": 1})


def test_true_item_second_in_one_row():
    sim = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.3], [0.1, 0.2, 0.7]])
    # ranks (1-based): 1, 2 (0.8 > 0.5), 1 -> R@1 = 2/3, MnR = 4/3, MdR = 1
    _check(retrieval_metrics(sim),
           {"R@1": 200 / 3, "R@5": 100, "R@10": 100, "MdR": 1, "MnR": 4 / 3})


def test_tie_with_one_other():
    # expected ranks 1.5, 1, 1 -> R@1 = (0.5 + 1 + 1) / 3, MnR = 3.5 / 3
    _check(retrieval_metrics(TIE), {"R@1": 250 / 3, "R@5": 100, "MdR": 1, "MnR": 3.5 / 3})


def _tie_and_greater() -> np.ndarray:
    """6 queries, 7 items; row 0 has g=4 above and t=2 ties, others rank 1."""
    sim = np.eye(6, 7)
    sim[0] = [0.5, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5]
    return sim


def test_partial_recall_at_5_and_rectangular():
    # row 0: rank uniform over {4, 5, 6}; P(<1) = 0, P(<5) = 1/3, P(<10) = 1,
    # expected 1-based rank 4 + 1 + 1 = 6. R@1 = 5/6, R@5 = (1/3 + 5)/6, MnR = 11/6
    _check(retrieval_metrics(_tie_and_greater()),
           {"R@1": 500 / 6, "R@5": 100 * 16 / 18, "R@10": 100, "MdR": 1, "MnR": 11 / 6})


def test_chunking_does_not_change_result(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 7)  # one row per chunk
    _check(retrieval_metrics(_tie_and_greater()), {"R@5": 100 * 16 / 18, "MnR": 11 / 6})


def test_constant_matrix():
    # every row: g = 0, t = 3 -> R@1 = 1/4, expected rank 1 + 1.5 = (N + 1) / 2
    _check(retrieval_metrics(np.ones((4, 4))),
           {"R@1": 25, "R@5": 100, "MdR": 2.5, "MnR": 2.5})


def test_tensor_input_matches_numpy():
    tensor = torch.tensor(TIE, dtype=torch.float32, requires_grad=True)
    assert retrieval_metrics(tensor) == retrieval_metrics(TIE)
    assert retrieval_metrics(tensor.to(torch.bfloat16)) == retrieval_metrics(TIE)


@pytest.mark.parametrize(
    "sim, match",
    [
        (np.ones(3), "2-D"),
        (np.ones((3, 2)), "num_queries <= num_items"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    ],
)
def test_retrieval_errors(sim, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(sim)


def test_large_matrix_runs():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((1000, 1000)) + 10 * np.eye(1000)
    out = retrieval_metrics(sim)
    assert out["R@1"] == 100 and out["MnR"] == 1


# S = [[1, 2], [3, 4]], T = 1: both columns softmax to [1, e^2] / (1 + e^2)
# = [0.1192029220, 0.8807970780]; out = S * w * 2.
INV_EXPECTED = np.array([[0.2384058440, 0.4768116881], [5.2847824679, 7.0463766238]])


def test_inverted_softmax_numpy():
    out = inverted_softmax(np.array([[1.0, 2.0], [3.0, 4.0]]), temperature=1.0)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, INV_EXPECTED, rtol=1e-9)


def test_inverted_softmax_tensor_keeps_type_and_grad():
    sim = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = inverted_softmax(sim, temperature=1.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), INV_EXPECTED, rtol=1e-6)
    out.sum().backward()
    assert sim.grad is not None


def test_inverted_softmax_is_stable():
    # logits of 1000: column softmax is [1, e^-1000 ~ 0] -> out = [[20, 0], [0, 20]]
    sim = np.array([[10.0, 0.0], [0.0, 10.0]])
    np.testing.assert_allclose(inverted_softmax(sim), [[20, 0], [0, 20]])
    np.testing.assert_allclose(inverted_softmax(torch.tensor(sim)).numpy(), [[20, 0], [0, 20]])
    with pytest.raises(ValueError, match="temperature"):
        inverted_softmax(sim, temperature=0.0)


def test_dual_softmax_by_hand_and_as_its_own_metric_set():
    # S = [[0.9, 0.1], [0.8, 0.7]] (rows texts), T = 0.5: column priors softmax([1.8, 1.6]) and softmax([0.2, 1.4])
    sim = np.array([[0.9, 0.1], [0.8, 0.7]])
    w0 = [math.exp(1.8) / (math.exp(1.8) + math.exp(1.6)), math.exp(1.6) / (math.exp(1.8) + math.exp(1.6))]
    w1 = [math.exp(0.2) / (math.exp(0.2) + math.exp(1.4)), math.exp(1.4) / (math.exp(0.2) + math.exp(1.4))]
    want = np.array([[0.9 * w0[0], 0.1 * w1[0]], [0.8 * w0[1], 0.7 * w1[1]]])  # [[0.495, 0.023], [0.360, 0.538]]
    np.testing.assert_allclose(dual_softmax(sim, 0.5), want, rtol=1e-9)
    from tasks.retrieval import retrieval_report

    report = retrieval_report(torch.tensor(sim), [1, 1], dsl_temperature=0.5)
    assert report["t2v/R@1"] == 50.0 and report["t2v_dsl/R@1"] == 100.0  # text 1 prefers video 0 until re-weighted
    assert "t2v_is/R@1" not in report and {"v2t_dsl/R@1", "v2t_dsl/MnR"} <= set(report)


# captions 0-2 belong to video 0, captions 3-4 to video 1
CAPTIONS = np.array([[0.1, 0.2], [0.2, 0.1], [0.9, 0.3], [0.3, 0.6], [0.4, 0.5]])


def test_multi_caption_metrics():
    out = multi_caption_metrics(CAPTIONS, [3, 2])
    # t2v ranks: c0 -> 2 (0.2 > 0.1), all others 1 -> R@1 = 4/5, MnR = 6/5
    _check(out["t2v"], {"R@1": 80, "R@5": 100, "MdR": 1, "MnR": 1.2})
    # v2t M[v, w] = max_{c in group w} sim[c, v] = [[0.9, 0.4], [0.3, 0.6]] -> perfect.
    # Off by one, groups {0,1},{2,3,4} give M[0] = [0.2, 0.9] and groups
    # {0..3},{4} give M[1] = [0.6, 0.5]: either way R@1 would be 50.
    _check(out["v2t"], {"R@1": 100, "MdR": 1, "MnR": 1})


def test_multi_caption_tensor_matches_numpy():
    tensor = torch.tensor(CAPTIONS, requires_grad=True)
    assert multi_caption_metrics(tensor, (3, 2)) == multi_caption_metrics(CAPTIONS, [3, 2])


@pytest.mark.parametrize(
    "counts, match",
    [
        ([3, 3], r"sum\(captions_per_video\)=6 does not match num_captions=5"),
        ([5], r"len\(captions_per_video\)=1 does not match num_videos=2"),
        ([5, 0], "at least one caption"),
    ],
)
def test_multi_caption_errors(counts, match):
    with pytest.raises(ValueError, match=match):
        multi_caption_metrics(CAPTIONS, counts)


ATTRS = [
    {"colour": "red", "shape": "cube", "direction": "left"},
    {"colour": "blue", "shape": "cube", "direction": "left"},  # colour-only vs 0
    {"colour": "red", "shape": "ball", "direction": "left"},  # shape-only vs 0
    {"colour": "red", "shape": "cube", "direction": "right"},  # direction-only vs 0
]
# Single-attribute pairs: colour (0,1),(1,0); shape (0,2),(2,0); direction (0,3),(3,0).
# Videos 1-3 differ from each other in two attributes, so they are never distractors.
PROBE_SIM = np.array([
    [0.8, 0.9, 0.1, 0.8],  # (0,1): above -> 0; (0,2): below -> 1; (0,3): tie -> 0.5
    [0.2, 0.7, 0.0, 0.0],  # (1,0): below -> 1
    [0.3, 0.0, 0.5, 0.0],  # (2,0): below -> 1
    [0.1, 0.0, 0.0, 0.4],  # (3,0): below -> 1
])


def test_attribute_probes():
    out = attribute_probes(PROBE_SIM, ATTRS)
    # colour (0 + 1)/2, shape (1 + 1)/2, direction (0.5 + 1)/2
    assert out == {"probe/colour": 50.0, "probe/shape": 100.0, "probe/direction": 75.0}


def test_attribute_probes_without_pairs_is_nan():
    attrs = [{"colour": "red", "speed": 1}, {"colour": "blue", "speed": 1}]
    out = attribute_probes(np.array([[1.0, 0.0], [0.0, 1.0]]), attrs, names=("colour", "speed"))
    assert out["probe/colour"] == 100.0 and math.isnan(out["probe/speed"])


def test_attribute_probes_errors():
    with pytest.raises(ValueError, match=r"len\(attributes\)=3 does not match num_videos=4"):
        attribute_probes(PROBE_SIM, ATTRS[:3])
    with pytest.raises(ValueError, match="no attribute 'speed'"):
        attribute_probes(PROBE_SIM, ATTRS, names=("colour", "speed"))


def test_format_table():
    assert format_table({"R@1": 50.0, "MnR": 1.5}) == "R@1  50.00\nMnR   1.50"
    assert format_table({}) == ""
