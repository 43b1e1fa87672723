"""The benchmark scripts scripts/bench_emcl.py, bench_eval.py, bench_train.py and bench_gpu.py, on tiny sizes."""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from multitask.emcl import EMCL

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


bench_emcl, bench_eval, bench_train = load_script("bench_emcl"), load_script("bench_eval"), load_script("bench_train")
bench_gpu = load_script("bench_gpu")


class MatmulShapes(TorchDispatchMode):
    """Records the operand shapes of every matrix product the dispatcher sees."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
            self.calls.append(tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
        return func(*args, **(kwargs or {}))


def test_floor_is_exactly_the_matmuls_emcl_does():
    n, d, k, iters = 12, 10, 3, 4
    x = torch.randn(n, d)
    expected = [((d, n), (n, k)), ((n, d), (d, k))] * iters + [((n, k), (k, d))]
    with MatmulShapes() as floor:
        bench_emcl.matmul_floor(bench_emcl.floor_operands(x, k), iters)
    with MatmulShapes() as emcl, torch.no_grad():
        EMCL(num_bases=k, iters=iters).eval()(x)
    assert len(floor.calls) == 2 * iters + 1
    assert floor.calls == expected and emcl.calls == expected


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_growth_exponent_recovers_a_known_power(power):
    sizes = [256, 512, 1024, 2048, 4096, 8192]
    assert bench_emcl.growth_exponent(sizes, [3e-4 * s ** power for s in sizes]) == pytest.approx(power, abs=1e-9)


def test_quick_sweep_keeps_the_headline_and_three_sizes_per_axis():
    axes = bench_emcl.sweep_sizes(bench_emcl.QUICK, bench_emcl.HEADLINE)
    assert bench_emcl.HEADLINE == bench_emcl.Size(2048, 512, 32)
    assert all(bench_emcl.HEADLINE in sizes and len(sizes) >= 3 for sizes in axes.values())


def test_emcl_json_has_the_headline_keys(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_emcl, "QUICK", bench_emcl.Sweep(n=(16, 64), d=(8,), k=(2,), repeats=1))
    monkeypatch.setattr(bench_emcl, "HEADLINE", bench_emcl.Size(32, 16, 4))
    bench_emcl.main(["--quick", "--json", str(tmp_path / "emcl.json")])
    result = json.loads((tmp_path / "emcl.json").read_text())
    assert {"time_over_floor", "growth_exponent_n", "growth_exponent_d", "growth_exponent_k"} <= set(result)
    assert sorted(r["n"] for r in result["rows"] if (r["d"], r["k"]) == (16, 4)) == [16, 32, 64]
    headline = next(r for r in result["rows"] if (r["n"], r["d"], r["k"]) == (32, 16, 4))
    assert result["time_over_floor"] == pytest.approx(headline["eval_ms"] / headline["floor_ms"])  # the table's ratio
    assert headline["eval_ratio"] == pytest.approx(result["time_over_floor"])
    rows_n = [r for r in result["rows"] if (r["d"], r["k"]) == (16, 4)]
    assert result["growth_exponent_n"] == pytest.approx(bench_emcl.growth_exponent(
        [r["n"] for r in rows_n], [r["eval_ms"] for r in rows_n]))


def test_eval_phases_add_up_and_json_has_the_headline(tmp_path):
    bench_eval.main(["--quick", "--size", "24", "--json", str(tmp_path / "eval.json")])
    result = json.loads((tmp_path / "eval.json").read_text())
    seconds, total = result["seconds"], result["seconds"]["total"]
    phases = sum(seconds[p] for p in bench_eval.PHASES)
    assert 0 < result["post_encode_fraction"] < 1 and result["num_videos"] == result["num_texts"] == 24
    assert phases <= total and total - phases < 0.05 * total
    assert result["post_encode_fraction"] == pytest.approx(
        (seconds["similarity (EMCL)"] + seconds["metrics"]) / total)


def test_eval_phases_give_the_metrics_of_task_evaluate():
    task, data, eval_cfg = bench_eval.build(20)
    assert data.test.num_frames == 12 and data.test[3]["video"].shape == (12, 3, 64, 64)
    _, metrics = bench_eval.evaluate_phases(task, data, eval_cfg)
    assert {"t2v_is/R@1", "probe/shape"} <= set(metrics)
    assert bench_eval.same_metrics(metrics, task.evaluate(data, torch.device("cpu"), eval_cfg, 0).metrics)


def test_train_bench_compares_like_with_like(tmp_path):
    """The framework loop and the bare loop it is timed against make the same updates from the same start."""
    conf = bench_train.default_conf(batch_size=4)
    batch = bench_train.make_batch(conf)
    torch.manual_seed(0)
    framework = bench_train.build_task(conf).train()
    bare = copy.deepcopy(framework)
    initial = [p.detach().clone() for p in framework.parameters()]
    training = bench_train.framework_run(conf, framework, batch, steps=2, log_dir=tmp_path)
    assert math.isfinite(bench_train.time_framework(training))
    assert training.loop.step == 2 and training.loop.epoch == 1  # the engine's own loop ran every step
    optimizer, scheduler = bench_train.optim(bare, conf["trainer"])
    assert math.isfinite(bench_train.time_bare(bare, batch, optimizer, scheduler, 2, conf["trainer"]["grad_clip"]))
    for (name, a), b in zip(framework.named_parameters(), bare.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert any(not torch.allclose(a, b) for a, b in zip(framework.parameters(), initial))  # and they did train


def test_gpu_bench_quick_json_is_sane_and_survives_out_of_memory(tmp_path, monkeypatch):
    """``--quick --json`` on the CPU; a caption batch that runs out of memory reads OOM and the run goes on."""
    make_batch = bench_gpu.make_batch

    def out_of_memory_for_captions(conf: dict, batch_size: int, device: torch.device, seed: int = 0) -> dict:
        if conf["task"]["name"] == "caption" and batch_size == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return make_batch(conf, batch_size, device, seed)

    monkeypatch.setattr(bench_gpu, "make_batch", out_of_memory_for_captions)
    bench_gpu.main(["--quick", "--json", str(tmp_path / "gpu.json")])
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert {"device", "device_name", "peak_tflops", "steps", "attention", "losses", "loader"} <= set(result)
    assert result["skipped"] == [] and result["errors"] == {} and result["peak_tflops"] is None  # no MFU on a CPU
    steps = {(r["task"], r["precision"], r["batch"], r["chunks"]): r for r in result["steps"]}
    assert len(steps) == 3 * 2 * 2 * 2
    assert {r["status"] for k, r in steps.items() if k[0] == "caption"} == {"OOM", "OOM (at batch 2)"}
    ok = [r for r in result["steps"] if r["task"] != "caption"]
    for row in ok:
        assert row["status"] == "ok" and row["step_s"] > 0 and math.isfinite(row["loss"]), row
        assert row["clips_per_s"] == pytest.approx(row["batch"] / row["step_s"])
        assert row["tflops"] == pytest.approx(row["flops"] / row["step_s"] / 1e12) and row["mfu"] is None
    for (task, precision, batch, chunks), row in steps.items():  # FLOPs: by shape, without recomputation
        if task != "caption":
            assert row["flops"] == steps[(task, "fp32", batch, 1)]["flops"]
            per_clip = [steps[(task, precision, b, chunks)]["flops"] / b for b in (2, 4)]
            assert per_clip[1] == pytest.approx(per_clip[0], rel=0.1)  # the encoders' FLOPs dominate
    sdpa, math_path = result["attention"]
    assert sdpa["kernels"] == {"fused (cpu)": 6} and math_path["kernels"] == {"math": 6}  # 3 image, 2 text, 1 frame
    assert sdpa["flops"] == math_path["flops"]
    losses = result["losses"]["curves"]
    assert set(losses) == {"fp32", "bf16"} and all(len(c) == 2 for c in losses.values())
    assert result["losses"]["max_rel_diff"]["bf16"] < 0.05
    demand = result["loader"]["demand"]["clips_per_s"]
    assert demand == max(r["clips_per_s"] for r in ok if r["task"] == "retrieval")
    rows = result["loader"]["rows"]
    assert [(r["source"], r["workers"]) for r in rows] == [(s, w) for s in ("videos", "frame cache") for w in (0, 1)]
    assert all(r["clips_per_s"] > 0 and r["of_demand"] == pytest.approx(r["clips_per_s"] / demand) for r in rows)


def test_search_bench_json_has_every_size_and_a_sound_recall(tmp_path):
    bench_search = load_script("bench_search")
    bench_search.main(["--quick", "--json", str(tmp_path / "search.json")])
    result = json.loads((tmp_path / "search.json").read_text())
    assert {"dim", "queries", "build_threads", "query_threads", "policy", "rows", "rerank_200_ms"} <= set(result)
    rows = result["rows"]
    assert [r["size"] for r in rows] == list(bench_search.QUICK_SIZES) and result["queries"] == 50
    assert rows[0]["index"] == "Flat (exact)" and rows[0]["recall_at_10"] == 1.0  # below the policy's flat_below
    assert rows[1]["index"].startswith("IVF-Flat nlist=205 ") and rows[1]["recall_at_10"] >= 0.95
    assert all(0 < r["p50_ms"] <= r["p95_ms"] and r["index_mb"] > 0 for r in rows) and result["rerank_200_ms"] > 0
    assert all(r["recall_10_in_rerank"] >= r["recall_at_10"] for r in rows)  # the top 200 holds the top 10
