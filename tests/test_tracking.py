"""Experiment tracking (trainer.log_with): TensorBoard events read back equal metrics.jsonl and eval.json, also
across a resume; the config as hyper-parameters; W&B offline; a missing tracker package stops at start."""
import json
import shutil
from pathlib import Path

import pytest
from accelerate import Accelerator
from conftest import GEN, compose, run_train
from omegaconf import OmegaConf

from multitask import tracking
from multitask.engine import run
from multitask.errors import ConfigError

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: E402


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the event files of ``folder``, as TensorBoard shows them (a restart's purge applied)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def hyperparameters(folder: Path) -> dict:
    """The hyper-parameters of the first run under ``folder`` (add_hparams writes them in a sub-folder)."""
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("events.out.tfevents.*"))):
        events = EventAccumulator(str(sub))
        events.Reload()
        data = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                for k, v in data.session_start_info.hparams.items()}
    raise AssertionError(f"no hyper-parameters under {folder}")


def expected_series(out: Path) -> dict[str, list[tuple[int, float]]]:
    """What the trackers must hold: each metrics.jsonl value at its step, then the final evaluation."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()):
        for key, value in record.items():
            if key not in ("step", "epoch"):
                series.setdefault(key, []).append((record["step"], value))
    for key, value in json.loads((out / "eval.json").read_text())["metrics"].items():
        series.setdefault(f"eval/{key}", []).append((4, value))
    return series


def assert_events_match(out: Path) -> None:
    found = scalars(out / "tracking" / "emcl-multitask")
    expected = expected_series(out)
    assert {"loss", "contrastive_loss", "lr", "eval/t2v/R@1", "eval/probe/colour"} <= set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in found[tag]] == [s for s, _ in points], tag  # every step once (a resume purges)
        assert [v for _, v in found[tag]] == pytest.approx([v for _, v in points], rel=1e-6, nan_ok=True), tag


def test_tensorboard_events_equal_the_run_files_also_after_a_resume(e2e_run, tmp_path):
    base = e2e_run("retrieval")[0]
    out = tmp_path / "run"
    args = ("task=retrieval", "debug=quick", f"data.root={base / 'data'}", GEN, f"output_dir={out}",
            "trainer.save_every=2", "trainer.eval_every=2", "trainer.log_with=tensorboard")
    first = run_train(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert_events_match(out)
    params = hyperparameters(out / "tracking" / "emcl-multitask")
    assert params["trainer.lr"] == pytest.approx(2e-3) and params["task.name"] == "retrieval"
    assert params["trainer.log_with"] == "tensorboard" and params["model.pretrained"] == "null"

    shutil.rmtree(out / "checkpoints" / "step_4")  # as if killed after saving step 2; the events go on to step 4
    (out / "checkpoints" / "last").unlink()
    (out / "eval.json").unlink()
    resumed = run_train(*args, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert len(list((out / "tracking" / "emcl-multitask").glob("events.out.tfevents.*"))) == 2
    assert_events_match(out)


def test_unknown_or_missing_tracker_stops_at_start(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="unknown trainer.log_with 'tensorbord'; known: tensorboard, wandb"):
        tracking.tracker_names(["tensorboard", "tensorbord"])
    assert tracking.tracker_names("tensorboard") == ["tensorboard"] and tracking.accelerator_options(None, ".") == {}
    monkeypatch.setitem(tracking.TRACKERS, "aim", lambda: False)  # as without its package
    out = tmp_path / "run"
    conf = OmegaConf.create(compose("trainer.log_with=[tensorboard,aim]", f"output_dir={out}", "data.root=/none"))
    with pytest.raises(ConfigError) as stopped:
        run(conf)
    assert str(stopped.value) == ("trainer.log_with=aim needs the aim package: pip install aim (or pip install "
                                  "'emcl-multitask[tracking]')")
    assert not out.exists()  # before anything was written


def test_hyperparameters_are_flat_scalars():
    flat = tracking.hyperparameters({"trainer": {"lr": 0.1, "log_with": ["tensorboard", "wandb"]},
                                     "model": {"pretrained": None, "emcl": {"enabled": True}}})
    assert flat == {"trainer.lr": 0.1, "trainer.log_with": '["tensorboard", "wandb"]', "model.pretrained": "null",
                    "model.emcl.enabled": True}


def test_wandb_offline_run_is_reopened_on_resume(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    conf = {"output_dir": str(tmp_path / "run"), "trainer": {"lr": 0.25}}
    folder = tmp_path / "run" / "tracking"
    ids = []
    for step in (0, 2):  # a fresh run, then one resumed from a checkpoint at step 2
        accelerator = Accelerator(cpu=True, **tracking.accelerator_options("wandb", conf["output_dir"]))
        tracking.start(accelerator, "emcl-test", conf, step)
        tracking.log_record(accelerator, {"step": step + 1, "epoch": 0, "loss": 1.75})
        tracking.finish(accelerator, {"t2v/R@1": 12.5}, step + 1)
        ids.append(json.loads((folder / "run_ids.json").read_text())["wandb"])
    assert ids[0] == ids[1]  # the resumed run reopens the first (`wandb sync` joins the offline parts)
    runs = sorted((folder / "wandb").glob("offline-run-*"))
    assert runs and {r.name.rsplit("-", 1)[1] for r in runs} == {ids[0]}
    data = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert all(key in data for key in (b"loss", b"eval/t2v/R@1", b"trainer.lr", b"emcl-test", str(tmp_path).encode()))
