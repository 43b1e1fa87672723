"""Training-step benchmark: the framework's step against a bare PyTorch loop, and gradient caching's memory.

    python scripts/bench_train.py [--quick] [--json PATH]

1. Overhead: the same model (the default tiny retrieval model) and the same in-memory batch, stepped by
   ``multitask.engine.train_one_epoch`` (Accelerate, loss checks, gradient clipping, scheduler, metric
   logging, the per-log-step EMCL consistency check) and by a bare loop (forward, backward, clipping,
   AdamW, scheduler). Blocks of steps alternate; medians over blocks. Data loading is not part of a
   step here (scripts/bench_video.py measures it).
2. Gradient caching (``trainer.contrastive_chunks``): peak resident memory added by one training step
   and its time, each setting in a fresh subprocess.

3. Frozen backbone: bare steps with ``model.freeze_backbone=true`` on pixels and on the stored tower
   outputs a feature cache (scripts/cache_features.py) serves, against fine-tuning on pixels.

JSON keys: ``overhead`` (framework step time / bare step time - 1), ``bare_step_s``, ``framework_step_s``,
``steps_s`` (per setting), ``feature_cache_speedup`` (fine-tuning step / frozen step on cached features),
``chunks`` (rows of chunks, peak_mb, step_s) and ``memory_saving`` (peak with 1 chunk / peak with the most).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from multitask.bad_videos import BadVideoLog  # noqa: E402
from multitask.engine import compose_config, make_accelerator  # noqa: E402
from multitask.optim import build_optimizer, build_scheduler  # noqa: E402
from multitask.runlog import MetricsLog  # noqa: E402
from multitask.task import build_task  # noqa: E402
from multitask.training import Loop, Training, train_one_epoch  # noqa: E402


def default_conf(batch_size: int, chunks: int = 1, freeze: bool = False) -> dict:
    """The default run's resolved config (configs/), at ``batch_size``; no checkpoints or evaluation."""
    return compose_config([f"trainer.batch_size={batch_size}", "trainer.save_every=null", "trainer.eval_every=null",
                           f"trainer.contrastive_chunks={chunks}", f"model.freeze_backbone={str(freeze).lower()}"])


def make_batch(conf: dict) -> dict:
    """Random pixels and distinct captions of the default shapes: (B, T, 3, S, S)."""
    b, t, s = conf["trainer"]["batch_size"], conf["data"]["num_frames"], conf["data"]["image_size"]
    g = torch.Generator().manual_seed(0)
    return {"video": torch.randn(b, t, 3, s, s, generator=g), "video_mask": torch.ones(b, t, dtype=torch.long),
            "text": [f"a red disc number {i} moves up" for i in range(b)]}


class Repeat:
    """A stand-in loader: the same batch ``n`` times (``set_epoch`` as the engine expects, on the loader and on
    its dataset, which it is itself)."""

    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n
        self.dataset = self

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle."""

    def __iter__(self):
        return iter([self.batch] * self.n)


def optim(task: torch.nn.Module, trainer: dict) -> tuple:
    optimizer = build_optimizer(task, trainer["lr"], trainer["lr_backbone"], trainer["weight_decay"])
    return optimizer, build_scheduler(optimizer, 10**6, trainer["warmup_ratio"])


def framework_run(conf: dict, task: torch.nn.Module, batch: dict, steps: int, log_dir: Path) -> Training:
    accelerator = make_accelerator(conf["trainer"])
    optimizer, scheduler = optim(task, conf["trainer"])
    task, optimizer, scheduler = accelerator.prepare(task, optimizer, scheduler)
    log = MetricsLog(log_dir / "metrics.jsonl", True)
    bad = BadVideoLog(log_dir / "skipped_videos.json", {}, conf["data"]["max_bad_fraction"], True)
    return Training(conf, accelerator, task, None, optimizer, scheduler, Repeat(batch, steps), log, Loop(), 10**9, bad)


def time_framework(training: Training) -> float:
    """Seconds per step over one pass of the stand-in loader."""
    start = time.perf_counter()
    with tqdm(disable=True) as bar:
        train_one_epoch(training, bar)
    return (time.perf_counter() - start) / training.loader.n


def time_bare(task: torch.nn.Module, batch: dict, optimizer, scheduler, steps: int, clip: float) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = task(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return (time.perf_counter() - start) / steps


def frozen_setups(conf: dict, batch: dict) -> dict[str, tuple]:
    """model.freeze_backbone=true stepped on pixels, and on the stored tower outputs a feature cache holds."""
    frozen_conf = default_conf(conf["trainer"]["batch_size"], freeze=True)
    torch.manual_seed(0)
    frozen = build_task(frozen_conf).train()
    with torch.no_grad():
        video = batch["video"]
        outputs = frozen.backbone.frame_outputs(video.flatten(0, 1)).view(*video.shape[:2], -1)  # (B, T, F)
    return {"frozen, pixels": (frozen, batch, *optim(frozen, conf["trainer"])),
            "frozen, cached features": (frozen, {**batch, "video": outputs}, *optim(frozen, conf["trainer"]))}


def overhead(batch_size: int, blocks: int, steps: int) -> dict:
    """Bare and framework steps of the default model, and bare steps of the frozen variants, interleaved."""
    conf = default_conf(batch_size)
    torch.manual_seed(0)
    task, batch = build_task(conf).train(), make_batch(conf)
    bare = {"fine-tune, pixels": (task, batch, *optim(task, conf["trainer"])), **frozen_setups(conf, batch)}
    clip = conf["trainer"]["grad_clip"]
    times: dict[str, list[float]] = {name: [] for name in [*bare, "framework"]}
    with tempfile.TemporaryDirectory() as tmp:
        run = framework_run(conf, task, batch, steps, Path(tmp))
        time_framework(run), [time_bare(*setup, 1, clip) for setup in bare.values()]  # warm-up
        for _ in tqdm(range(blocks), desc="step blocks", leave=False):
            for name, setup in bare.items():
                times[name].append(time_bare(*setup, steps, clip))
            times["framework"].append(time_framework(run))
    median = {name: statistics.median(t) for name, t in times.items()}
    b, f = median["fine-tune, pixels"], median["framework"]
    return {"bare_step_s": b, "framework_step_s": f, "overhead": f / b - 1, "steps_s": median,
            "feature_cache_speedup": b / median["frozen, cached features"]}


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def child_memory(batch_size: int, chunks: int) -> dict:
    """In a fresh process: peak resident memory the first training step adds, and a second step's time."""
    conf = default_conf(batch_size, chunks)
    torch.manual_seed(0)
    task, batch = build_task(conf).train(), make_batch(conf)
    task({k: v[:2] for k, v in batch.items()})["loss"].backward()  # lazy initialisations, at a tiny batch
    before = rss_mb()
    task(batch)["loss"].backward()  # sets the peak; the second step, warmed up, is timed
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    start = time.perf_counter()
    task(batch)["loss"].backward()
    return {"chunks": chunks, "peak_mb": peak - before, "step_s": time.perf_counter() - start}


def memory(batch_size: int, chunk_counts: list[int]) -> list[dict]:
    rows = []
    for chunks in chunk_counts:
        cmd = [sys.executable, __file__, "--child", str(chunks), "--batch", str(batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def report(result: dict, batch_size: int, memory_batch: int) -> None:
    print(f"\ntraining step, default tiny retrieval model, global batch {batch_size} (medians over blocks)")
    print(f"{'loop':<12}{'s/step':>10}{'ratio':>10}")
    print(f"{'bare':<12}{result['bare_step_s']:>10.4f}{1.0:>10.3f}")
    print(f"{'framework':<12}{result['framework_step_s']:>10.4f}{1 + result['overhead']:>10.3f}")
    print(f"overhead = {100 * result['overhead']:+.1f}%  (target under 10%)")
    print("\nbare steps: fine-tuning against model.freeze_backbone=true, on pixels and on cached tower outputs")
    full = result["steps_s"]["fine-tune, pixels"]
    for name, seconds in result["steps_s"].items():
        if name != "framework":
            print(f"{name:<26}{seconds:>10.4f} s{full / seconds:>8.2f}x")
    print(f"\ngradient caching, one forward+backward at batch {memory_batch}")
    print(f"{'chunks':<8}{'peak MB':>10}{'vs 1':>8}{'s/step':>10}{'vs 1':>8}")
    first = result["chunks"][0]
    for row in result["chunks"]:
        print(f"{row['chunks']:<8}{row['peak_mb']:>10.0f}{row['peak_mb'] / first['peak_mb']:>8.2f}"
              f"{row['step_s']:>10.2f}{row['step_s'] / first['step_s']:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small batch and few repeats (under a minute)")
    parser.add_argument("--json", type=Path, help="write the headline numbers here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_memory(args.batch, args.child)))
        return
    batch_size, blocks, steps, memory_batch = (16, 5, 3, 64) if args.quick else (64, 7, 8, 256)
    chunks = memory(memory_batch, [1, 4] if args.quick else [1, 2, 4, 8, 16])  # before this process sets up Accelerate
    result = {**overhead(batch_size, blocks, steps), "chunks": chunks}
    result["memory_saving"] = result["chunks"][0]["peak_mb"] / result["chunks"][-1]["peak_mb"]
    report(result, batch_size, memory_batch)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
