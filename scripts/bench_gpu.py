"""GPU benchmark of the paper's training steps: time, memory, model FLOPs utilisation, attention path, compile,
mixed-precision losses, and whether the data loader keeps up.

On a CUDA machine (planned for about 6 minutes on one H100, an estimate: no GPU has run it yet; nothing is
downloaded, weights are random; no section starts after --budget-s, 400 s):

    EMCL_CACHE=/tmp/emcl-bench python scripts/bench_gpu.py --json bench_gpu.json | tee bench_gpu.txt

    python scripts/bench_gpu.py --quick --json /tmp/bench_gpu.json   # tiny sizes on the CPU, seconds (the tests)

1. steps: the training step of experiment=emcl_msrvtt_retrieval (ViT-B/32, 12 frames at 224 px, the 4-layer frame
   transformer, text-conditioned pooling, EMCL K=32 with 9 iterations), of experiment=emcl_msrvtt_caption (the
   same towers, mean pooling, a 3-layer decoder) and of experiment=emcl_msrvtt_qa (ViT-B/16 as the reference,
   2048-d projections), all with model.pretrained=null; in fp32, bf16 and fp16 (autocast, and a GradScaler for
   fp16, as Accelerate runs them), at per-GPU batch 32, 64 and 128, without and with gradient caching
   (trainer.contrastive_chunks=4). Per cell: seconds per step (forward, backward, clipping, AdamW; the same
   batch already on the card; after warm-up steps, the device synchronised), clips/s, peak memory
   (torch.cuda.max_memory_allocated less the other models built: this model's weights, gradients, optimizer
   state, activations, the batch), model TFLOP/s and MFU.
   A cell that runs out of memory reads OOM, and the larger batches of its row are not tried.
2. attention: the same step with PyTorch's choice of SDPA kernel (flash / memory-efficient / cuDNN, what the
   towers, the frame transformer and the decoder use) against the math path (sdpa_kernel(SDPBackend.MATH)),
   with the kernels each ran.
3. losses: retrieval losses over 50 steps from the same weights and batches in each precision, side by side.
4. loader: clips/s of the training DataLoader with 4, 8 and 16 workers, decoding generated H.264 clips (240 x 240,
   300 frames) and reading a frame cache, beside the clips/s the fastest retrieval step consumes.
5. compile: trainer.compile (regional torch.compile, inductor) against eager: the first step (compiling) and
   the steady step.

FLOPs: multitask.perf.step_flops, FlopCounterMode over each cell's first warm-up step (matrix products,
convolutions and attention by their shapes, 2 per multiply-add; gradient caching's recomputed forward left
out). Peak: the dense datasheet TFLOP/s of multitask.perf.PEAK_TFLOPS for torch.cuda.get_device_name() (bf16 and
fp16 tensor cores; fp32 without tf32, PyTorch's default for matrix products); MFU is n/a on other devices.
A section starts only while the time budget (--budget-s) lasts, and the steps take at most STEPS_SHARE of it
(their remaining cells read skipped), so the other sections get their turn; the JSON is rewritten after every
section.
JSON keys: device, device_name, peak_tflops, plan, steps, attention, losses, loader, compile (rows as printed),
skipped (sections the budget left out), errors (section -> the exception that stopped it), seconds.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu_loader import loader_section  # noqa: E402
from bench_gpu_report import report  # noqa: E402

from multitask.caption_tokenizer import CaptionTokenizer, train_tokenizer  # noqa: E402
from multitask.compiling import compile_blocks  # noqa: E402
from multitask.engine import compose_config  # noqa: E402
from multitask.optim import build_optimizer  # noqa: E402
from multitask.perf import AttentionKernels, card_peak, peak_tflops, step_flops  # noqa: E402
from multitask.task import Task, build_task  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COLOURS, SHAPES, MOTIONS = ("red", "green", "blue", "yellow"), ("disc", "square", "star"), ("left", "right", "up")
Cell = tuple[str, str, int]  # (task, precision, per-GPU batch)
STEPS_SHARE = 0.55  # of the time budget, at most, for the steps section


@dataclass(frozen=True)
class Plan:
    """What a run measures."""
    tasks: dict[str, list[str]]  # task -> compose overrides
    precisions: tuple[str, ...]
    batches: tuple[int, ...]
    chunks: int  # trainer.contrastive_chunks of the gradient-caching cells
    warmup: int  # steps before timing (the first one counts FLOPs)
    steps: int  # timed steps per cell
    attention: tuple[Cell, ...]  # cells also run on the math path
    loss_batch: int
    loss_steps: int
    workers: tuple[int, ...]
    loader: dict  # clips, size, frames (the generated files); batch, num_frames, image_size (the loader's)
    compile: Cell | None
    compile_backend: str = "inductor"


FULL = Plan(tasks={"retrieval": ["experiment=emcl_msrvtt_retrieval"], "caption": ["experiment=emcl_msrvtt_caption"],
                   "qa": ["experiment=emcl_msrvtt_qa"]},
            precisions=("fp32", "bf16", "fp16"), batches=(32, 64, 128), chunks=4, warmup=2, steps=3,
            attention=(("retrieval", "bf16", 64), ("retrieval", "fp32", 64), ("qa", "bf16", 32)),
            loss_batch=32, loss_steps=50, workers=(4, 8, 16), compile=("retrieval", "bf16", 64),
            loader={"clips": 32, "size": 240, "frames": 300, "batch": 32, "num_frames": 12, "image_size": 224})
TINY = ["model.temporal=transformer", "model.temporal_layers=1", "data.num_frames=4", "data.image_size=32"]
QUICK = Plan(tasks={"retrieval": ["task=retrieval", "model.pooling=text_conditioned", *TINY],
                    "caption": ["task=caption", *TINY], "qa": ["task=qa", *TINY]},
             precisions=("fp32", "bf16"), batches=(2, 4), chunks=2, warmup=1, steps=1,  # 2 steps a cell
             attention=(("retrieval", "bf16", 4),), loss_batch=2, loss_steps=2, workers=(0, 1), compile=None,
             loader={"clips": 4, "size": 64, "frames": 24, "batch": 2, "num_frames": 4, "image_size": 32})


@dataclass
class Bench:
    """The run's state: device, time budget, the built tasks (once each) and their starting weights."""
    plan: Plan
    device: torch.device
    start: float  # time.perf_counter() at the start
    budget_s: float
    assets: Path
    tasks: dict[str, tuple[Task, dict]] = field(default_factory=dict)  # name -> (task, resolved config)
    initial: dict[str, dict] = field(default_factory=dict)  # name -> state dict on the CPU

    def out_of_time(self, share: float = 1.0) -> bool:
        """Past ``share`` of the time budget."""
        return time.perf_counter() > self.start + share * self.budget_s

    def task(self, name: str) -> tuple[Task, dict]:
        if name not in self.tasks:
            conf = compose_config([*self.plan.tasks[name], "data.root=unused", "model.pretrained=null"])
            torch.manual_seed(0)
            task = build_task(conf, None, self.assets).train()
            self.initial[name] = {k: v.clone() for k, v in task.state_dict().items()}
            self.tasks[name] = (task.to(self.device), conf)
        return self.tasks[name]


def caption(i: int) -> str:
    return f"a {COLOURS[i % 4]} {SHAPES[i % 3]} moves {MOTIONS[i % 3]} past landmark {i}"


def write_assets(folder: Path) -> Path:
    """What the caption and QA heads need without data: a tokenizer and an answer vocabulary (1500 answers)."""
    tokenizer = CaptionTokenizer(train_tokenizer([caption(i) for i in range(2000)], vocab_size=500))
    tokenizer.save(folder / "tokenizer.model")
    (folder / "answers.json").write_text(json.dumps([f"answer {i}" for i in range(1500)]))
    return folder


def make_batch(conf: dict, batch_size: int, device: torch.device, seed: int = 0) -> dict:
    """Random pixels (B, T, 3, S, S) on the device, distinct captions, questions and answers in the vocabulary."""
    t, s = conf["data"]["num_frames"], conf["data"]["image_size"]
    g = torch.Generator(device).manual_seed(seed)
    texts = [caption(seed * batch_size + i) for i in range(batch_size)]
    return {"video": torch.randn(batch_size, t, 3, s, s, generator=g, device=device),
            "video_mask": torch.ones(batch_size, t, dtype=torch.long, device=device), "text": texts,
            "question": [f"what does the {c.split()[2]} do?" for c in texts],
            "answer": [f"answer {(seed * batch_size + i) % 1500}" for i in range(batch_size)]}


def make_step(task: Task, conf: dict, precision: str, device: torch.device) -> Callable[[dict], torch.Tensor]:
    """One optimizer update as the training loop makes it: autocast, loss scaling for fp16, clipping, AdamW."""
    trainer = conf["trainer"]
    optimizer = build_optimizer(task, trainer["lr"], trainer["lr_backbone"], trainer["weight_decay"])
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    dtype = DTYPES[precision]

    def step(batch: dict) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = task(batch)["loss"]
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(task.parameters(), trainer["grad_clip"])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(bench: Bench) -> None:
    """Gradients and cached blocks back to the card between cells (and the peak-memory count reset)."""
    for task, _ in bench.tasks.values():
        task.zero_grad(set_to_none=True)
    if bench.device.type == "cuda":
        gc.collect()  # what an out-of-memory error's traceback kept alive
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(bench.device)


def timed_steps(bench: Bench, task: Task, conf: dict, precision: str, batch_size: int, count: bool) -> dict:
    """Warm-up steps (the first counting FLOPs and attention kernels when ``count``), then the timed ones."""
    plan, device = bench.plan, bench.device
    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0  # every built model's weights
    batch = make_batch(conf, batch_size, device)
    step = make_step(task, conf, precision, device)
    out: dict = {}
    synchronize(device)
    start = time.perf_counter()
    if count:
        with AttentionKernels() as kernels:
            out["flops"] = step_flops(lambda: step(batch))
        out["kernels"] = kernels.counts
    else:
        step(batch)
    synchronize(device)
    out["first_step_s"] = time.perf_counter() - start  # with compile: the compilation
    for _ in range(plan.warmup - 1):
        step(batch)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(plan.steps):
        loss = step(batch)
    synchronize(device)
    out.update(step_s=(time.perf_counter() - start) / plan.steps, loss=float(loss))
    if device.type == "cuda":  # this model's weights, and all the step allocated at its peak
        out["peak_gib"] = (torch.cuda.max_memory_allocated(device) - resident + model_bytes(task)) / 2**30
    else:
        out["peak_gib"] = None
    return out


def model_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def run_cell(bench: Bench, name: str, precision: str, batch_size: int, chunks: int, count: bool = True,
             task: Task | None = None) -> dict:
    """One measured cell; out of memory gives status OOM instead of an exception."""
    built, conf = bench.task(name)
    task = task or built
    row = {"task": name, "precision": precision, "batch": batch_size, "chunks": chunks}
    task.backbone.chunks = chunks
    release(bench)
    try:
        row.update(timed_steps(bench, task, conf, precision, batch_size, count), status="ok")
    except RuntimeError as error:  # torch.OutOfMemoryError, or a library's workspace that could not be allocated
        if not isinstance(error, torch.OutOfMemoryError) and "ALLOC_FAILED" not in str(error):
            raise
        row["status"] = "OOM"
    release(bench)
    if row["status"] == "ok":
        row["clips_per_s"] = batch_size / row["step_s"]
    return row


def add_rates(row: dict, flops: int | None, peak: float | None) -> dict:
    """Model TFLOP/s and MFU of an ok row (``flops``: the cell's own count or, for compiled cells, eager's)."""
    if row["status"] == "ok" and flops:
        row["tflops"] = flops / row["step_s"] / 1e12
        row["mfu"] = row["tflops"] / peak if peak else None
    return row


def steps_section(bench: Bench, peak_of: Callable[[str], float | None]) -> list[dict]:
    """Every task x precision x chunking x batch; a row stops at its first OOM (larger batches cannot fit)."""
    rows = []
    for name in bench.plan.tasks:
        for precision in bench.plan.precisions:
            for chunks in (1, bench.plan.chunks):
                failed = None
                for batch_size in bench.plan.batches:
                    base = {"task": name, "precision": precision, "batch": batch_size, "chunks": chunks}
                    if failed or bench.out_of_time(STEPS_SHARE):
                        status = f"OOM (at batch {failed})" if failed else "skipped (time budget)"
                        rows.append({**base, "status": status})
                        continue
                    row = run_cell(bench, name, precision, batch_size, chunks)
                    failed = batch_size if row["status"] == "OOM" else None
                    rows.append(add_rates(row, row.get("flops"), peak_of(precision)))
    return rows


def attention_section(bench: Bench, peak_of: Callable[[str], float | None]) -> list[dict]:
    """Each attention cell with PyTorch's kernel choice, then on the math path."""
    rows = []
    for name, precision, batch_size in bench.plan.attention:
        for path, context in (("sdpa", nullcontext), ("math", lambda: sdpa_kernel(SDPBackend.MATH))):
            if bench.out_of_time():
                return rows
            with context():
                row = run_cell(bench, name, precision, batch_size, 1)
            rows.append(add_rates({**row, "path": path}, row.get("flops"), peak_of(precision)))
    return rows


def losses_section(bench: Bench) -> dict:
    """Retrieval losses per step in each precision, from the same weights, batches and seed."""
    task, conf = bench.task("retrieval")
    task.backbone.chunks = 1
    batches = [make_batch(conf, bench.plan.loss_batch, bench.device, seed) for seed in range(4)]
    curves = {}
    for precision in bench.plan.precisions:
        task.load_state_dict(bench.initial["retrieval"])
        torch.manual_seed(0)
        step = make_step(task, conf, precision, bench.device)
        curves[precision] = [float(step(batches[i % len(batches)])) for i in range(bench.plan.loss_steps)]
    task.load_state_dict(bench.initial["retrieval"])
    release(bench)
    reference = curves["fp32"]
    return {"batch": bench.plan.loss_batch, "steps": bench.plan.loss_steps, "curves": curves,
            "max_rel_diff": {p: max(abs(a - b) / abs(b) for a, b in zip(c, reference))
                             for p, c in curves.items() if p != "fp32"}}


def compile_section(bench: Bench, peak_of: Callable[[str], float | None]) -> list[dict]:
    """The compile cell eager, then with trainer.compile's regional compilation of a copy of the model."""
    name, precision, batch_size = bench.plan.compile
    eager = run_cell(bench, name, precision, batch_size, 1)
    compiled = copy.deepcopy(bench.task(name)[0])
    blocks = compile_blocks(compiled.backbone, backend=bench.plan.compile_backend)
    row = run_cell(bench, name, precision, batch_size, 1, count=False, task=compiled)
    del compiled
    torch._dynamo.reset()
    release(bench)
    flops = eager.get("flops")
    return [add_rates({**eager, "mode": "eager"}, flops, peak_of(precision)),
            add_rates({**row, "mode": f"compiled ({len(blocks)} blocks, {bench.plan.compile_backend})"}, flops,
                      peak_of(precision))]


def demand(steps: list[dict]) -> dict | None:
    """The fastest retrieval cell: the clips/s a loader must deliver to keep that step busy."""
    ok = [r for r in steps if r["task"] == "retrieval" and r["status"] == "ok"]
    return max(ok, key=lambda r: r["clips_per_s"]) if ok else None


def sections(bench: Bench, result: dict, peak_of: Callable[[str], float | None]) -> dict[str, Callable[[], object]]:
    """Section name -> what computes it, in the order they run."""
    out = {"steps": lambda: steps_section(bench, peak_of),
           "attention": lambda: attention_section(bench, peak_of),
           "losses": lambda: losses_section(bench),
           "loader": lambda: loader_section(bench.plan, demand(result.get("steps", [])))}
    if bench.plan.compile is not None:
        out["compile"] = lambda: compile_section(bench, peak_of)
    return out


def run(plan: Plan, budget_s: float, json_path: Path | None) -> dict:
    """Every section while the budget lasts; one that fails is recorded (``errors``) and the next one runs."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():  # before Ampere
        plan = replace(plan, precisions=tuple(p for p in plan.precisions if p != "bf16"))
    peak, start = card_peak(name), time.perf_counter()
    result: dict = {"device": str(device), "device_name": name, "peak_tflops": asdict(peak) if peak else None,
                    "plan": asdict(plan), "skipped": [], "errors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(plan, device, start, budget_s, write_assets(Path(tmp)))
        for section, compute in sections(bench, result, lambda p: peak_tflops(peak, p)).items():
            if bench.out_of_time():
                result["skipped"].append(section)
                continue
            try:
                result[section] = compute()
            except Exception as error:  # an unattended run keeps the other sections' numbers
                traceback.print_exc()
                result["errors"][section] = f"{type(error).__name__}: {error}"
            result["seconds"] = time.perf_counter() - start
            if json_path:
                json_path.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes (the CPU test; seconds)")
    parser.add_argument("--json", type=Path, help="write the results here (after every section)")
    parser.add_argument("--budget-s", type=float, default=400.0, help="start no section after this many seconds")
    parser.add_argument("--compile-backend", help="torch.compile backend of the compile section (default inductor; "
                                                 "with --quick, runs the section, e.g. aot_eager)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.compile_backend:
        plan = replace(plan, compile=plan.compile or ("retrieval", "fp32", 2), compile_backend=args.compile_backend)
    threads = torch.get_num_threads()
    if args.quick:  # tiny operations: one thread is as fast, and steadier on a shared machine
        torch.set_num_threads(1)
    try:
        result = run(plan, args.budget_s, args.json)
    finally:
        torch.set_num_threads(threads)
    report(result)
    return result


if __name__ == "__main__":
    main()
