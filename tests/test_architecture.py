"""The structure: the library (multitask) never imports the heads (tasks), no module imports itself back
through others (function-local imports count), every module imports alone, and a head plugs in from
outside the library."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, compose

from multitask import task as registry

PACKAGES = ("multitask", "tasks")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports anywhere in the file (``from a import b``: a.b when that is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        out |= {n for n in names if n in known}
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def test_the_library_never_imports_the_heads():
    edges = graph()
    wrong = {m: sorted(d for d in deps if d.startswith("tasks")) for m, deps in edges.items()
             if m.startswith("multitask")}
    assert not {m: d for m, d in wrong.items() if d}


def test_no_import_cycles():
    edges, state, cycles = graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycles


IMPORT_EACH = """
import os, sys, traceback
import torch, torchvision, open_clip, transformers, datasets, accelerate, hydra, decord, av  # third-party, once
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # a child that has none of our modules yet
        try:
            __import__(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("FAILED", " ".join(failed))
"""


def test_every_module_imports_alone():
    names = sorted(modules())
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH, *names], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "FAILED", result.stdout + result.stderr[-3000:]


HEAD = '''
from multitask.task import Task, register_task
from multitask.types import EvalResult


class CountTask(Task):
    name = "count"
    serves = ("count",)

    def forward(self, batch):
        loss = self.backbone.encode_strings(batch["text"]).float().pow(2).mean()
        return {"loss": loss, "norm_loss": loss}

    def evaluate(self, data, device, eval_cfg, num_workers):
        return EvalResult({"count": float(len(data.test))}, len(data.test))


@register_task("count")
def build(cfg, data, assets, shared):
    return CountTask(*shared)
'''


def test_a_head_plugs_in_without_touching_the_library(tmp_path, monkeypatch, tiny_root):
    """A head from a package outside the repository, registered and trained end to end by the engine."""
    from omegaconf import OmegaConf

    from multitask.engine import run

    package = tmp_path / "myheads"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(HEAD))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "HEAD_PACKAGES", [*registry.HEAD_PACKAGES, "myheads"])
    monkeypatch.setitem(registry.TASKS, "count", None)  # removed again after the test; myheads fills it in
    conf = compose("debug=quick", "data=msrvtt", f"data.root={tiny_root}", f"output_dir={tmp_path / 'run'}")
    conf["task"] = {"name": "count", "annotations": "retrieval"}
    task = registry.build_task(conf)
    with pytest.raises(ValueError, match="trained for task=count, which has no qa head"):
        task.serving("qa")
    metrics = run(OmegaConf.create(conf))
    assert metrics == {"count": 16.0}  # the retrieval test split's 16 clips
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] \
        == [2, 4]
