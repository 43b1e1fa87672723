"""Every config group option composes, the values code relies on have the right types (a stray edit
once left ``num_frames: mkv`` in configs/data/activitynet.yaml), and every key is read by some code."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIGS = REPO / "configs"
OPTIONS = [f"{group}={path.stem}" for group in ("data", "model", "task", "experiment", "trainer")
           for path in sorted((CONFIGS / group).glob("*.yaml"))]
REQUIRED = {"data=shards": ["data.shards='/data/{00000..00009}.tar'"]}  # the mandatory value (???) of an option


def required(option: str) -> list[str]:
    return REQUIRED.get(option, ["data.root=/data"] if option.startswith("data=") else [])


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes_with_typed_values(option):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[option, *required(option)])
    conf = OmegaConf.to_container(cfg, resolve=True)
    for key in ("num_frames", "image_size", "max_words"):
        assert isinstance(conf["data"][key], int) and conf["data"][key] > 0, (option, key, conf["data"][key])
    for key in ("batch_size", "max_epochs", "num_workers", "contrastive_chunks"):
        assert isinstance(conf["trainer"][key], int), (option, key)
    assert isinstance(conf["model"]["freeze_backbone"], bool)
    assert conf["data"].get("frame_cache") is None and conf["data"].get("feature_cache") is None


class Tracked(dict):
    """A config group that records which keys were read (item access, ``get``, iteration, ``**`` unpacking)."""

    def __init__(self, data: dict, path: str, seen: set[str]) -> None:
        super().__init__({k: Tracked(v, f"{path}{k}.", seen) if isinstance(v, dict) else v for k, v in data.items()})
        self.path, self.seen = path, seen

    def __getitem__(self, key):
        self.seen.add(self.path + key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.seen.add(self.path + key)
        return super().get(key, default)

    def __iter__(self):  # also makes ** unpacking go through keys() and __getitem__
        return iter(list(super().keys()))

    def keys(self):
        return list(super().keys())

    def items(self):
        return [(k, self[k]) for k in super().keys()]

    def values(self):
        return [self[k] for k in super().keys()]


def leaves(conf: dict, path: str = "") -> set[str]:
    out = set()
    for key, value in conf.items():
        out |= leaves(value, f"{path}{key}.") if isinstance(value, dict) and value else {path + key}
    return out


def test_every_model_data_and_task_key_is_read_by_a_builder(tiny_root):
    """Build the data and the task of every head from composed configs: each model and data key must be
    read by one of them (``train_list`` only by retrieval), each task key by its own task."""
    from conftest import compose

    from multitask.engine import prepare_data
    from multitask.task import build_task

    shared_seen, shared_keys = set(), set()
    for task in ("retrieval", "caption", "qa", "multi"):
        conf = compose(f"task={task}", "data=msrvtt", f"data.root={tiny_root}", "data.num_frames=4",
                       "model.temporal_width=8")
        seen: set[str] = set()
        tracked = Tracked(conf, "", seen)
        build_task(tracked, prepare_data(tracked, show_progress=False))
        assert not {k for k in leaves(conf) if k.startswith("task.")} - seen, task
        shared_seen |= seen
        shared_keys |= {k for k in leaves(conf) if k.split(".")[0] in ("model", "data")}
    read_by_the_loop = _subscripts([REPO / "multitask" / f"{m}.py" for m in ("training", "engine")])  # e.g.
    # data.max_bad_fraction, model.init_from
    unread = {k for k in shared_keys - shared_seen if k.split(".")[-1] not in read_by_the_loop}
    assert not unread, sorted(unread)


def _subscripts(paths: list[Path]) -> set[str]:
    """String keys the code reads by subscript or ``get``."""
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                found.add(node.slice.value)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
    return found


def test_every_trainer_eval_and_run_key_is_read_by_the_engine():
    from conftest import compose

    engine = [REPO / "multitask" / f"{m}.py" for m in ("engine", "training", "evaluation", "metrics", "task")]
    engine += sorted((REPO / "tasks").glob("*.py"))
    read = _subscripts(engine)
    conf = compose()
    keys = {k for k in leaves(conf) if k.split(".")[0] not in ("model", "data", "task")}
    assert not {k for k in keys if k.split(".")[-1] not in read}


def test_library_defaults_equal_the_config_files():
    """The few public functions that keep defaults (EMCL's are the paper's; the generator is a library
    function) hold the values the configs state, so dropping a key from a yaml changes nothing silently."""
    import inspect

    from conftest import compose

    from multitask.data.synthetic import generate_synthetic
    from multitask.emcl import EMCL

    conf = compose()

    def defaults(fn) -> dict:
        return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}

    assert {k: v for k, v in defaults(EMCL).items() if k != "generator"} == \
        {k: v for k, v in conf["model"]["emcl"].items() if k != "enabled"}
    assert conf["data"]["generator"] == {k: v for k, v in defaults(generate_synthetic).items()
                                         if k in conf["data"]["generator"]}
    assert set(conf["data"]["generator"]) == set(defaults(generate_synthetic)) - {"seed", "show_progress", "layout"}
