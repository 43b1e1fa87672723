"""Time the phases of ``RetrievalTask.evaluate`` on a 1000 x 1000 retrieval set with the tiny model.

The task is built with ``tasks.build_task`` from the framework's own config files (configs/task/retrieval.yaml,
configs/model/tiny.yaml, configs/data/synthetic.yaml and the eval group of configs/train.yaml, read with
OmegaConf, not Hydra), with ``data.num_frames`` 12. Videos are random pixel tensors of the decoded shape
(T, 3, H, W), made in memory (a pool of 64 clips, reused) instead of decoded from files, so the benchmark
measures the model rather than the video decoder. The phases are evaluate()'s own steps, run one by one:
encode videos, encode texts, blockwise similarity through EMCL, metrics (``retrieval_report`` with inverted
softmax and the attribute probes of synthetic data). Headline: post_encode_fraction = (similarity + metrics)
/ total, target under 0.05. Without --quick, three passes (medians) and one end-to-end evaluate() call.

    python scripts/bench_eval.py --quick --json /tmp/bench_eval.json
    python scripts/bench_eval.py --size 2000 --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time
from collections.abc import Iterator
from itertools import cycle, islice, product
from pathlib import Path

import torch
from torch.utils.data import Dataset

from multitask.data.synthetic_words import COLOUR_WORDS, DIRECTIONS, MOTION_PATHS, SHAPE_WORDS
from multitask.encoding import encode_texts, encode_videos
from multitask.engine import compose_config
from multitask.metrics import dsl_temperature, retrieval_report
from multitask.similarity import VideoTextScorer
from multitask.task import Task, build_task
from multitask.types import TaskData

NUM_FRAMES = 12
PHASES = ("encode videos", "encode texts", "similarity (EMCL)", "metrics")
POST_ENCODE = ("similarity (EMCL)", "metrics")


class RandomClips(Dataset):
    """What evaluate() reads from ``data.test``: items {"video": (T, 3, H, W), "video_mask": (T,)},
    ``num_frames``, ``rows``, ``captions()`` and ``video_ids()``; ``size`` videos with one caption each, pixels
    random."""

    def __init__(self, size: int, num_frames: int, image_size: int, pool: int = 64, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.num_frames, self.size = num_frames, size
        self.clips = torch.randn(pool, num_frames, 3, image_size, image_size, generator=gen)  # (P, T, 3, H, W)
        lengths = torch.randint(num_frames // 2, num_frames + 1, (pool,), generator=gen)  # padded like short clips
        self.masks = (torch.arange(num_frames) < lengths[:, None]).long()  # (P, T)
        combos = list(islice(cycle(product(COLOUR_WORDS, SHAPE_WORDS, DIRECTIONS)), size))
        self.attributes = [{"colour": c, "shape": s, "direction": d} for c, s, d in combos]
        self.texts = [f"a {c} {s} moves {MOTION_PATHS[d][i % 5]} #{i}" for i, (c, s, d) in enumerate(combos)]
        self.rows = [{"captions": [text]} for text in self.texts]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        slot = index % len(self.clips)
        return {"video": self.clips[slot], "video_mask": self.masks[slot]}

    def captions(self) -> tuple[list[str], list[int]]:
        return self.texts, [1] * self.size

    def video_ids(self) -> list[str]:
        return [f"clip{i}" for i in range(self.size)]


def build(size: int, num_frames: int = NUM_FRAMES) -> tuple[Task, TaskData, dict]:
    """(the default retrieval task in eval mode, its test data of ``size`` random clips, the eval config group)."""
    cfg = compose_config([f"data.num_frames={num_frames}"])
    torch.manual_seed(cfg["seed"])
    task = build_task(cfg).eval()
    clips = RandomClips(size, num_frames, cfg["data"]["image_size"])
    return task, TaskData(train=clips, test=clips, attributes=clips.attributes), cfg["eval"]


@contextlib.contextmanager
def timed(times: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start


@torch.no_grad()
def evaluate_phases(task: Task, data: TaskData, eval_cfg: dict) -> tuple[dict[str, float], dict]:
    """RetrievalTask.evaluate's steps one by one on the CPU: (seconds per phase, 'other' and 'total'; metrics)."""
    device, batch_size, times = torch.device("cpu"), eval_cfg["batch_size"], {}
    start = time.perf_counter()
    with timed(times, "encode videos"):
        videos = encode_videos(task.backbone, data.test, device, batch_size)
        frames, mask = videos.frames, videos.mask  # (V, T, D), (V, T)
    with timed(times, "encode texts"):
        texts, counts = data.test.captions()
        text = encode_texts(task.backbone, texts, batch_size)  # (Q, D)
    with timed(times, "similarity (EMCL)"):
        sim = task.scorer.blockwise(text, frames, mask, eval_cfg["block_size"]).cpu()  # (Q, V)
    with timed(times, "metrics"):
        dsl = dsl_temperature(eval_cfg, float(task.backbone.logit_scale()))
        metrics = retrieval_report(sim, counts, eval_cfg["inverted_softmax"], data.attributes, dsl)
    times["total"] = time.perf_counter() - start
    times["other"] = times["total"] - sum(times[p] for p in PHASES)
    without = VideoTextScorer(None, task.scorer.pooling, task.scorer.reference_compat)
    times["similarity without EMCL"] = _similarity_seconds(without, text, frames, mask, eval_cfg)
    return times, metrics


def _similarity_seconds(scorer: VideoTextScorer, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                        eval_cfg: dict) -> float:
    """Seconds of the blockwise similarity with ``head`` (EMCL's share: compare with the phase's time)."""
    start = time.perf_counter()
    scorer.blockwise(text, frames, mask, eval_cfg["block_size"])
    return time.perf_counter() - start


def run(quick: bool, size: int = 1000, num_frames: int = NUM_FRAMES) -> dict:
    """Median seconds per phase over the passes (1 with ``quick``, else 3, plus one evaluate() call)."""
    task, data, eval_cfg = build(size, num_frames)
    passes = [evaluate_phases(task, data, eval_cfg) for _ in range(1 if quick else 3)]
    seconds = {name: statistics.median(t[name] for t, _ in passes) for name in passes[0][0]}
    out = {"post_encode_fraction": sum(seconds[p] for p in POST_ENCODE) / seconds["total"], "seconds": seconds,
           "num_videos": size, "num_texts": size, "num_frames": num_frames, "image_size": data.test.clips.shape[-1],
           "block_size": eval_cfg["block_size"], "batch_size": eval_cfg["batch_size"], "passes": len(passes),
           "threads": torch.get_num_threads(), "quick": quick}
    if not quick:
        start = time.perf_counter()
        metrics = task.evaluate(data, torch.device("cpu"), eval_cfg, num_workers=0).metrics
        out["evaluate_seconds"] = time.perf_counter() - start
        out["evaluate_matches_phases"] = same_metrics(metrics, passes[0][1])
    return out


def same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal metric dicts, NaN (a probe without distractors) equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def format_report(result: dict) -> str:
    """Table of phase, seconds and fraction of the total, then the headline."""
    s, total = result["seconds"], result["seconds"]["total"]
    lines = [f"{'phase':<24} {'seconds':>8} {'fraction':>8}"]
    lines += [f"{name:<24} {s[name]:8.3f} {s[name] / total:8.3f}" for name in (*PHASES, "other", "total")]
    lines.append(f"(similarity without EMCL: {s['similarity without EMCL']:.3f} s, so EMCL's share of that phase "
                 f"is {s['similarity (EMCL)'] - s['similarity without EMCL']:.3f} s)")
    if "evaluate_seconds" in result:
        lines.append(f"evaluate() end to end: {result['evaluate_seconds']:.3f} s, "
                     f"same metrics as the phases: {result['evaluate_matches_phases']}")
    verdict = "under" if result["post_encode_fraction"] < 0.05 else "OVER"
    lines.append(f"post_encode_fraction {result['post_encode_fraction']:.4f} ({verdict} the 0.05 target)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one pass, no end-to-end evaluate() call")
    parser.add_argument("--size", type=int, default=1000, help="number of videos and of texts (default 1000)")
    parser.add_argument("--json", type=Path, help="also write the summary to this JSON file")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own default)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args.quick, args.size)
    print(f"{result['num_texts']} texts x {result['num_videos']} videos ({result['num_frames']} frames of "
          f"{result['image_size']} px, random pixels in memory, not decoded), tiny model, block "
          f"{result['block_size']}, {result['threads']} threads, median of {result['passes']} pass(es)")
    print(format_report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
