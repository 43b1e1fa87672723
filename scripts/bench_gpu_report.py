"""The printed tables of scripts/bench_gpu.py (the same rows as its JSON)."""
from __future__ import annotations


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _kernels(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted((counts or {}).items())) or "none"


def _cell(row: dict) -> str:
    head = f"{row['task']:<10}{row['precision']:>5}{row['batch']:>6}{row['chunks']:>7}"
    if row["status"] != "ok":
        return f"{head}   {row['status']}"
    mfu = _num(100 * row["mfu"], ".1f") + "%" if row.get("mfu") is not None else "n/a"
    return (f"{head}{row['step_s']:>9.4f}{row['clips_per_s']:>9.1f}{_num(row['peak_gib'], '.2f'):>9}"
            f"{_num(row.get('tflops'), '.3g'):>9}{mfu:>8}")


def steps_table(rows: list[dict]) -> None:
    print(f"{'task':<10}{'prec':>5}{'batch':>6}{'chunks':>7}{'s/step':>9}{'clips/s':>9}{'peak GiB':>9}"
          f"{'TFLOP/s':>9}{'MFU':>8}")
    for row in rows:
        print(_cell(row))


def attention_table(rows: list[dict]) -> None:
    print("\nattention: PyTorch's SDPA kernel choice against the math path (sdpa_kernel(SDPBackend.MATH));")
    print("kernels: forward attention calls in the first step, by kernel")
    for row in rows:
        print(f"{row['path']:<6}{_cell(row)}   {_kernels(row.get('kernels'))}")


def compile_table(rows: list[dict]) -> None:
    print("\ncompile: trainer.compile (regional torch.compile of the backbone's blocks) against eager")
    for row in rows:
        first = f"first step {row['first_step_s']:.1f} s" if row["status"] == "ok" else ""
        print(f"{_cell(row)}   {row['mode']}  {first}")


def losses_table(losses: dict) -> None:
    curves = losses["curves"]
    print(f"\nlosses: retrieval, batch {losses['batch']}, {losses['steps']} steps from the same weights and batches")
    print(f"{'step':>6}" + "".join(f"{p:>10}" for p in curves))
    n = losses["steps"]
    for i in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1}):
        print(f"{i + 1:>6}" + "".join(f"{c[i]:>10.4f}" for c in curves.values()))
    for precision, diff in losses["max_rel_diff"].items():
        print(f"max |{precision} - fp32| / fp32 over the steps: {100 * diff:.2f}%")


def loader_table(loader: dict) -> None:
    clips, demand = loader["clips"], loader["demand"]
    print(f"\nloader: training DataLoader, {clips['num_frames']} frames at {clips['image_size']} px per clip, from "
          f"{clips['size']} x {clips['size']} H.264 files of {clips['frames']} frames and from a frame cache")
    if demand:
        print(f"the step's demand: {demand['clips_per_s']:.1f} clips/s ({demand['task']} {demand['precision']}, "
              f"batch {demand['batch']}, chunks {demand['chunks']})")
    print(f"{'source':<13}{'workers':>8}{'clips/s':>10}{'of demand':>11}")
    for row in loader["rows"]:
        share = _num(100 * row["of_demand"], ".0f") + "%" if row["of_demand"] is not None else "n/a"
        print(f"{row['source']:<13}{row['workers']:>8}{row['clips_per_s']:>10.1f}{share:>11}")


def report(result: dict) -> None:
    peak = result["peak_tflops"]
    limits = (f"dense peak TFLOP/s: bf16/fp16 {peak['half']}, tf32 {peak['tf32']}, fp32 {peak['fp32']}" if peak
              else "no peak known for this device: MFU n/a")
    print(f"\n{result['device_name']} ({result['device']}); {limits}")
    print("steps: seconds per training step at the per-GPU batch; chunks: trainer.contrastive_chunks")
    tables = {"steps": steps_table, "attention": attention_table, "compile": compile_table,
              "losses": losses_table, "loader": loader_table}
    for section, table in tables.items():
        if section in result:
            table(result[section])
    if result["skipped"]:
        print(f"\nnot run (time budget): {', '.join(result['skipped'])}")
    for section, error in result["errors"].items():
        print(f"\n{section} failed: {error}")
    print(f"\n{result.get('seconds', 0.0):.0f} s")
