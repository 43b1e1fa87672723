"""How well approximate search agrees with exact EMCL search, on an index folder and its checkpoint.

For every query, the exact top k (``Model.search(..., exact=True)``: every indexed video through EMCL) is
compared with
- search as it runs (``--rerank R``: the first stage's R best, re-ranked through EMCL): recall@k, the share of
  the exact top k it returns;
- the first stage alone, two ways: the share of the exact top k among the R best by the cosine of the
  L2-normalised pooled video and text features (what the first stage ranks by), and by the inner product of
  the same features unnormalised (what a first stage without normalising would rank by);
- exact search over the same videos in a shuffled order (one value, whatever R): EMCL scores a video together
  with the others of its block, so another grouping alone moves the top k this much.

    python scripts/search_agreement.py INDEX --msrvtt-json DATA/MSRVTT_data.json   # each clip's first caption
    python scripts/search_agreement.py INDEX --queries queries.txt -k 10 --rerank 10 25 50 100 200 --json out.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import multitask
from multitask.backbone import masked_mean
from multitask.search_index import SearchIndex
from multitask.types import FrameFeatures


def first_captions(msrvtt_json: Path, ids: list[str]) -> list[str]:
    """The first caption of every indexed video that ``MSRVTT_data.json`` describes, in index order."""
    first: dict[str, str] = {}
    for sentence in json.loads(msrvtt_json.read_text())["sentences"]:
        first.setdefault(sentence["video_id"], sentence["caption"])
    return [first[i] for i in ids if i in first]


def overlap(found: list[str] | np.ndarray, exact: list[str] | np.ndarray) -> float:
    return len(set(found) & set(exact)) / len(exact)


@torch.no_grad()
def first_stage_scores(model: multitask.Model, index: SearchIndex, queries: list[str]) -> dict[str, np.ndarray]:
    """(queries, videos) scores of the two candidate first stages."""
    feats = index.features()
    text = torch.cat([model.backbone.encode_strings(queries[i: i + 256]).float()
                      for i in range(0, len(queries), 256)]).cpu()  # (Q, D), unnormalised
    cosine = torch.nn.functional.normalize(text, dim=-1) @ model.pool_frames(feats.frames, feats.mask).T
    return {"cosine": cosine.numpy(), "inner product": (text @ masked_mean(feats.frames, feats.mask).T).numpy()}


def shuffled_features(index: SearchIndex, seed: int = 0) -> FrameFeatures:
    """Every indexed video in a shuffled order: exact search over these puts other videos together in EMCL's
    blocks."""
    feats = index.features()
    order = torch.randperm(len(feats.ids), generator=torch.Generator().manual_seed(seed))
    return FrameFeatures([feats.ids[i] for i in order], feats.frames[order], feats.mask[order])


def measure(model: multitask.Model, index: SearchIndex, queries: list[str], k: int, reranks: list[int]) -> dict:
    stages, shuffled = first_stage_scores(model, index, queries), shuffled_features(index)
    ids = np.array(index.ids)
    rows: dict[str, dict[int, list[float]]] = {name: {r: [] for r in reranks}
                                               for name in ["search", *(f"first stage: {s}" for s in stages)]}
    rows["exact, videos shuffled"] = {0: []}
    for q, query in enumerate(tqdm(queries, desc="queries")):
        exact = [v for v, _ in model.search(query, k, index, exact=True)]
        rows["exact, videos shuffled"][0].append(overlap([v for v, _ in model.search(query, k, shuffled, exact=True)],
                                                         exact))
        for r in reranks:
            rows["search"][r].append(overlap([v for v, _ in model.search(query, k, index, rerank=r)], exact))
            for name, scores in stages.items():
                rows[f"first stage: {name}"][r].append(overlap(ids[np.argsort(-scores[q], kind="stable")[:r]], exact))
    return {name: {r: float(np.mean(v)) for r, v in by_r.items()} for name, by_r in rows.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--queries", type=Path, help="one query per line")
    source.add_argument("--msrvtt-json", type=Path, help="MSRVTT_data.json: each indexed clip's first caption")
    parser.add_argument("--checkpoint", type=Path, help="default: the index's")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--rerank", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    parser.add_argument("--max-queries", type=int, help="only the first N queries")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one query at a time: more threads only wait for each other on a busy machine
    index = SearchIndex(args.index)
    model = multitask.load(args.checkpoint or index.checkpoint)
    queries = (args.queries.read_text().splitlines() if args.queries else first_captions(args.msrvtt_json, index.ids))
    queries = [q for q in queries if q.strip()][: args.max_queries]
    result = {"videos": len(index.ids), "queries": len(queries), "k": args.k,
              "recall": measure(model, index, queries, args.k, args.rerank)}
    print(f"recall@{args.k} against exact EMCL search ({len(index.ids)} videos, {len(queries)} queries)")
    print("| | " + " | ".join(f"R={r}" for r in args.rerank) + " |\n|---|" + "---:|" * len(args.rerank))
    for name, by_r in result["recall"].items():
        print(f"| {name} | " + " | ".join(f"{by_r.get(r, by_r.get(0)):.3f}" for r in args.rerank) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
