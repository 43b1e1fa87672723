import json

import pytest
import torch

from multitask import checkpoint as ckpt
from multitask.training import check_finite


def stage(root, step):
    folder = ckpt.staging_dir(root, step)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_finalize_links_last_and_prunes(tmp_path):
    for step in (10, 20, 30):
        stage(tmp_path, step)
        ckpt.finalize(tmp_path, step, {"task": "retrieval", "step": step}, keep=2)
    assert [s for s, _ in ckpt.complete_steps(tmp_path)] == [20, 30]
    assert (tmp_path / "last").resolve() == (tmp_path / "step_30").resolve()
    assert ckpt.latest(tmp_path).name == "step_30"


def test_interrupted_save_is_never_picked(tmp_path):
    stage(tmp_path, 10)
    ckpt.finalize(tmp_path, 10, {"task": "retrieval", "step": 10}, keep=None)
    stage(tmp_path, 20)  # crashed before finalize: no meta.json, still .tmp
    assert ckpt.latest(tmp_path).name == "step_10"


def test_read_meta_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.read_meta(tmp_path / "nope", "retrieval")
    (tmp_path / "half").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.read_meta(tmp_path / "half", "retrieval")
    (tmp_path / "half" / "meta.json").write_text(json.dumps({"task": "caption", "step": 3}))
    with pytest.raises(ckpt.CheckpointError, match="belongs to task 'caption', not 'retrieval'"):
        ckpt.read_meta(tmp_path / "half", "retrieval")


def test_non_finite_loss_names_the_step():
    check_finite(torch.tensor(1.5), 0)
    with pytest.raises(FloatingPointError, match="at step 8"):
        check_finite(torch.tensor(float("nan")), 7)


def test_metrics_log_truncation_survives_a_cut_off_line(tmp_path):
    """A run killed while appending leaves half a line; resume must still truncate the log."""
    import json

    from multitask.runlog import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.2}\n{"ste')
    MetricsLog(path, True).truncate_after(2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    MetricsLog(path, True).truncate_after(1)
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n'
