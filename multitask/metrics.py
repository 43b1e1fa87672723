"""Retrieval, probing, caption and QA metrics.

All functions are pure. Similarity matrices may be numpy arrays or torch
tensors (any device, dtype, with or without grad). Recall values are
percentages on a 0-100 scale; ranks are 1-based. Ties between the true item
and other items are broken uniformly at random, in expectation. Caption
scores come from pycocoevalcap (Java found by ``multitask.java``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]
T = TypeVar("T", np.ndarray, torch.Tensor)

RECALL_KS: tuple[int, ...] = (1, 5, 10, 50)
_CHUNK_ELEMENTS = 1 << 22  # rows per chunk are chosen so a chunk has ~4M entries


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Convert an array or tensor to a float64 numpy array on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _as_matrix(sim: ArrayLike) -> np.ndarray:
    """Return `sim` as a float64 2-D matrix, rejecting bad shapes and NaN."""
    s = _to_numpy(sim)
    if s.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D, got shape {tuple(s.shape)}")
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"similarity matrix must be non-empty, got shape {tuple(s.shape)}")
    if np.isnan(s).any():
        raise ValueError("similarity matrix contains NaN")
    return s


def _row_chunks(num_rows: int, num_cols: int) -> Iterator[slice]:
    """Yield row slices so each chunk holds roughly `_CHUNK_ELEMENTS` entries."""
    step = max(1, _CHUNK_ELEMENTS // max(1, num_cols))
    for start in range(0, num_rows, step):
        yield slice(start, min(start + step, num_rows))


def _ranks(sim: np.ndarray, target_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: g = #columns scoring strictly above the target, t = #other exact ties."""
    num_rows, num_cols = sim.shape
    greater = np.empty(num_rows, dtype=np.int64)
    ties = np.empty(num_rows, dtype=np.int64)
    for rows in _row_chunks(num_rows, num_cols):
        block = sim[rows]
        target = block[np.arange(block.shape[0]), target_cols[rows]][:, None]
        greater[rows] = (block > target).sum(axis=1)
        ties[rows] = (block == target).sum(axis=1) - 1
    return greater, ties


def _summarise(greater: np.ndarray, ties: np.ndarray) -> dict[str, float]:
    """Expected recall@k and median/mean rank from per-query g and t."""
    out: dict[str, float] = {}
    for k in RECALL_KS:
        p_hit = np.clip(k - greater, 0, ties + 1) / (ties + 1)
        out[f"R@{k}"] = float(100.0 * p_hit.mean())
    expected_rank = greater + ties / 2.0 + 1.0
    out["MdR"] = float(np.median(expected_rank))
    out["MnR"] = float(expected_rank.mean())
    return out


def retrieval_metrics(sim: ArrayLike) -> dict[str, float]:
    """R@1/5/10/50, MdR and MnR for a (Q, N) matrix whose row i matches column i."""
    s = _as_matrix(sim)
    num_queries, num_items = s.shape
    if num_queries > num_items:
        raise ValueError(
            f"need num_queries <= num_items (row i matches column i), got shape {s.shape}"
        )
    return _summarise(*_ranks(s, np.arange(num_queries)))


def inverted_softmax(sim: T, temperature: float = 0.01) -> T:
    """The EMCL reference's inverted softmax: S * softmax(S / temperature, dim=0) * S.shape[0] (a prior over the
    queries of each column, as in dual softmax; the factor N keeps the scale)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if isinstance(sim, torch.Tensor):
        work = sim if sim.dtype in (torch.float32, torch.float64) else sim.float()
        out = work * torch.softmax(work / temperature, dim=0) * work.shape[0]
        return out.to(sim.dtype) if sim.is_floating_point() else out
    s = np.asarray(sim, dtype=np.float64)
    logits = s / temperature
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    weights /= weights.sum(axis=0, keepdims=True)
    return s * weights * s.shape[0]


def dual_softmax(sim: T, temperature: float) -> T:
    """Dual softmax (DSL, Cheng et al. 2021) at inference: S * softmax(S / temperature, dim=0). Rows are queries;
    each column's scores are re-weighted by how strongly that item prefers each query over the others."""
    return inverted_softmax(sim, temperature) / sim.shape[0]


def _transpose(sim: ArrayLike) -> ArrayLike:
    return sim.t() if isinstance(sim, torch.Tensor) else np.asarray(sim).T


def _directions(sim: ArrayLike, counts: list[int]) -> dict[str, dict[str, float]]:
    if all(c == 1 for c in counts):
        return {"t2v": retrieval_metrics(sim), "v2t": retrieval_metrics(_transpose(sim))}
    return multi_caption_metrics(sim, counts)


def _reweighted(sim: ArrayLike, counts: list[int], prior, tag: str) -> dict[str, float]:
    """Metrics of a query-prior re-weighting (inverted softmax, DSL), under their own names: the prior runs
    over the queries of each direction (captions for t2v, videos for v2t)."""
    t2v = _directions(prior(sim), counts)["t2v"]
    v2t = _directions(prior(_transpose(sim)).t(), counts)["v2t"]
    return {**{f"t2v_{tag}/{k}": v for k, v in t2v.items()}, **{f"v2t_{tag}/{k}": v for k, v in v2t.items()}}


def retrieval_report(sim: ArrayLike, counts: list[int], use_inverted_softmax: bool = False,
                     attributes: list[dict] | None = None, dsl_temperature: float | None = None) -> dict[str, float]:
    """Flat metric dict: t2v/..., v2t/..., optionally t2v_is/..., v2t_is/... (inverted softmax),
    t2v_dsl/..., v2t_dsl/... (dual softmax at ``dsl_temperature``) and probe/...."""
    out = {f"{d}/{k}": v for d, m in _directions(sim, counts).items() for k, v in m.items()}
    if use_inverted_softmax:
        out.update(_reweighted(sim, counts, inverted_softmax, "is"))
    if dsl_temperature is not None:
        out.update(_reweighted(sim, counts, lambda s: dual_softmax(s, dsl_temperature), "dsl"))
    if attributes is not None and all(c == 1 for c in counts):
        out.update(attribute_probes(sim, attributes))
    return out


def dsl_temperature(eval_cfg: dict, logit_scale: float) -> float | None:
    """``eval.dsl_temperature``, or 1 / the model's logit scale (its training temperature) when null;
    None when ``eval.dual_softmax`` is off."""
    if not eval_cfg["dual_softmax"]:
        return None
    return eval_cfg["dsl_temperature"] or 1.0 / logit_scale


def _check_groups(counts: Sequence[int], num_captions: int, num_videos: int) -> np.ndarray:
    """Validate captions-per-video against the matrix shape."""
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    if len(c) != num_videos:
        raise ValueError(
            f"len(captions_per_video)={len(c)} does not match num_videos={num_videos}"
        )
    if int(c.sum()) != num_captions:
        raise ValueError(
            f"sum(captions_per_video)={int(c.sum())} does not match num_captions={num_captions}"
        )
    if (c < 1).any():
        raise ValueError("every video needs at least one caption in captions_per_video")
    return c


def multi_caption_metrics(
    sim: ArrayLike, captions_per_video: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Text-to-video and video-to-text metrics for a (num_captions, num_videos) matrix.

    Captions are grouped by video in order. For v2t, video v is scored against
    caption group w by the group's best caption.
    """
    s = _as_matrix(sim)
    num_captions, num_videos = s.shape
    counts = _check_groups(captions_per_video, num_captions, num_videos)
    true_video = np.repeat(np.arange(num_videos), counts)
    t2v = _summarise(*_ranks(s, true_video))
    group_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    best_per_group = np.maximum.reduceat(s, group_starts, axis=0)  # [w, v]
    v2t = retrieval_metrics(best_per_group.T)  # M[v, w]
    return {"t2v": t2v, "v2t": v2t}


def _attribute_codes(
    attributes: Sequence[Mapping[str, object]], names: Sequence[str]
) -> np.ndarray:
    """Integer-code each named attribute: (num_videos, len(names)); equal values share a code."""
    codes = np.empty((len(attributes), len(names)), dtype=np.int64)
    for k, name in enumerate(names):
        seen: list[object] = []
        for j, attrs in enumerate(attributes):
            if name not in attrs:
                raise ValueError(f"video {j} has no attribute {name!r}")
            value = attrs[name]
            if value not in seen:
                seen.append(value)
            codes[j, k] = seen.index(value)
    return codes


def attribute_probes(
    sim: ArrayLike,
    attributes: Sequence[Mapping[str, object]],
    names: Sequence[str] = ("colour", "shape", "direction"),
) -> dict[str, float]:
    """Per attribute, % of single-attribute distractors scored below the true video.

    A distractor for query i and attribute a is a video j that differs from
    video i in a only (among `names`). Ties count one half. Pairs are pooled
    over queries; NaN if an attribute has no distractor pairs.
    """
    s = _as_matrix(sim)
    num_queries, num_videos = s.shape
    if num_queries > num_videos:
        raise ValueError(f"need num_queries <= num_videos, got shape {s.shape}")
    if len(attributes) != num_videos:
        raise ValueError(
            f"len(attributes)={len(attributes)} does not match num_videos={num_videos}"
        )
    codes = _attribute_codes(attributes, names)  # (N, A)
    # per attribute a: a code shared exactly by the videos that agree on every other attribute
    rest = [np.unique(np.delete(codes, a, axis=1), axis=0, return_inverse=True)[1].reshape(-1)
            for a in range(len(names))]
    below = np.zeros(len(names))
    total = np.zeros(len(names))
    for rows in _row_chunks(num_queries, num_videos):
        idx = np.arange(rows.start, rows.stop)
        true_score = s[idx, idx][:, None]
        credit = (s[rows] < true_score) + 0.5 * (s[rows] == true_score)  # (rows, N)
        for a in range(len(names)):
            single = (codes[idx, a, None] != codes[None, :, a]) & (rest[a][idx, None] == rest[a][None, :])  # (rows, N)
            below[a] += credit[single].sum()  # multiples of 1/2: exact in any order
            total[a] += np.count_nonzero(single)
    scores = np.divide(100.0 * below, total, out=np.full(len(names), np.nan), where=total > 0)
    return {f"probe/{name}": float(v) for name, v in zip(names, scores)}


def format_table(metrics: Mapping[str, float]) -> str:
    """Aligned two-column plain-text table of metric names and values (2 decimals)."""
    if not metrics:
        return ""
    values = {name: f"{float(v):.2f}" for name, v in metrics.items()}
    name_width = max(len(str(name)) for name in values)
    value_width = max(len(v) for v in values.values())
    return "\n".join(
        f"{str(name):<{name_width}}  {v:>{value_width}}" for name, v in values.items()
    )


CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def caption_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr (0-100) of one caption per video against all its references,
    after PTB tokenisation, with pycocoevalcap (the COCO caption evaluation code)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from multitask.java import ensure_java

    if set(predictions) != set(references) or not predictions:
        raise ValueError(f"predictions and references must cover the same non-empty set of videos "
                         f"({len(predictions)} predicted, {len(references)} with references)")
    if any(len(refs) == 0 for refs in references.values()):
        raise ValueError("every video needs at least one reference caption")
    ensure_java()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
    res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in references})
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(gts, res)
    scores = dict(zip(CAPTION_METRICS[:4], bleu))
    scores["METEOR"] = Meteor().compute_score(gts, res)[0]
    scores["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    return {k: 100.0 * float(scores[k]) for k in CAPTION_METRICS}


def qa_metrics(ranked: Sequence[Sequence[str]], answers: Sequence[str], categories: Sequence[str]) -> dict[str, float]:
    """Accuracy (0-100) of the top answer, overall and per question type, and top-5 accuracy.

    ``ranked[i]`` lists question i's predicted answers, best first; a true answer outside the answer
    vocabulary can never be predicted, so it counts as wrong.
    """
    if not (len(ranked) == len(answers) == len(categories)) or not answers:
        raise ValueError(f"need one ranked list, answer and category per question, got "
                         f"{len(ranked)}, {len(answers)}, {len(categories)}")
    top1 = np.array([bool(r) and r[0] == a for r, a in zip(ranked, answers)], dtype=np.float64)
    top5 = np.array([a in list(r)[:5] for r, a in zip(ranked, answers)], dtype=np.float64)
    out = {"accuracy": 100.0 * top1.mean(), "top5_accuracy": 100.0 * top5.mean()}
    kinds = np.array(categories)
    for kind in sorted(set(categories)):
        out[f"accuracy/{kind}"] = 100.0 * top1[kinds == kind].mean()
    return {k: float(v) for k, v in out.items()}
