"""Video-blind baselines on the test split, scored exactly as the tasks score themselves.

- caption: one constant caption for every test video (the most frequent training caption, or --caption);
- qa: the answer prior, the most frequent training answers of each question type (top 5 for top-5 accuracy).

    python scripts/baselines.py caption --synthetic-seed 0
    python scripts/baselines.py qa --root /data/msrvtt
"""
from __future__ import annotations

import argparse
import os
from collections import Counter, defaultdict
from pathlib import Path

from multitask.data.msrvtt import caption_tables
from multitask.data.msrvtt_qa import qa_tables
from multitask.metrics import caption_metrics, format_table, qa_metrics


def constant_caption(root: Path, caption: str | None) -> tuple[str, dict[str, float]]:
    train, test = caption_tables(root)
    if caption is None:
        caption = Counter(c for group in train["captions"] for c in group).most_common(1)[0][0]
    ids = list(test["video_id"])
    return caption, caption_metrics({v: caption for v in ids}, dict(zip(ids, test["captions"])))


def answer_prior(root: Path) -> tuple[dict[str, str], dict[str, float]]:
    train, test = qa_tables(root)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for kind, answer in zip(train["category"], train["answer"]):
        by_kind[kind][answer] += 1
    overall = [a for a, _ in Counter(train["answer"]).most_common(5)]  # for a type unseen in training
    prior = {kind: [a for a, _ in counts.most_common(5)] for kind, counts in by_kind.items()}
    ranked = [prior.get(kind, overall) for kind in test["category"]]
    return {k: v[0] for k, v in prior.items()}, qa_metrics(ranked, list(test["answer"]), list(test["category"]))


def synthetic_root(seed: int) -> Path:
    from multitask.data.synthetic import generate_synthetic

    cache = Path(os.environ.get("EMCL_CACHE", Path.home() / ".cache" / "emcl-multitask"))
    return generate_synthetic(cache / f"synthetic-msrvtt-seed{seed}", seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["caption", "qa"])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", type=Path, help="a data root in the MSR-VTT / MSRVTT-QA layout")
    where.add_argument("--synthetic-seed", type=int, help="the synthetic set of this data.seed (generated if absent)")
    parser.add_argument("--caption", help="caption: score this constant instead of the most frequent one")
    args = parser.parse_args()
    root = args.root if args.root is not None else synthetic_root(args.synthetic_seed)
    if args.task == "caption":
        choice, metrics = constant_caption(root, args.caption)
        print(f"constant caption: {choice!r}")
    else:
        choice, metrics = answer_prior(root)
        print(f"answer prior per question type: {choice}")
    print(format_table(metrics))


if __name__ == "__main__":
    main()
