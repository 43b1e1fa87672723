"""`multitask export`: a portable model folder (weights without optimizer state, config, tokenizer or answers,
model card) that multitask.load, eval_only and the commands take as they take the checkpoint; the Hub upload."""
import contextlib
import io
import json

import pytest
import torch
from safetensors.torch import load_file

import multitask
from multitask.cli import main
from multitask.errors import ConfigError
from multitask.portable import folder_size
from multitask.metrics import format_table


@pytest.fixture(scope="module")
def retrieval(e2e_run, tmp_path_factory):
    """(run directory, its last checkpoint, the folder `multitask export` wrote from it, the command's output)."""
    _, run, _ = e2e_run("retrieval")
    out = tmp_path_factory.mktemp("export") / "retrieval-model"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(run / "checkpoints" / "last"), "--out", str(out)]) == 0
    return run, run / "checkpoints" / "last", out, printed.getvalue()


def test_the_folder_holds_the_model_and_its_card(retrieval):
    run, checkpoint, out, printed = retrieval
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "meta.json", "model.safetensors"]
    exported, trained = load_file(str(out / "model.safetensors")), load_file(str(checkpoint / "model.safetensors"))
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in trained)
    assert json.loads((out / "meta.json").read_text())["trained_steps"] == 4
    assert folder_size(out) < folder_size(checkpoint) / 2  # no optimizer state
    assert f"{out}: model folder, {folder_size(out) / 1e6:.1f} MB" in printed
    card = (out / "README.md").read_text()
    report = json.loads((run / "eval.json").read_text())
    assert "# EMCL retrieval model\n\nHeads: retrieval; an open_clip `emcl-tiny` backbone" in card
    assert "trained 4 steps" in card and "`data=synthetic`" in card
    assert format_table(report["metrics"]) in card and "t2v/R@1" in card  # the run's metrics
    assert f"{report['num_samples']} samples scored" in card
    assert f"debug=quick data.root={run.parent / 'data'}" in card and "output_dir=" in card  # the command


def test_load_takes_the_folder(retrieval):
    """What every `multitask` command and eval_only rebuild the model with (``checkpoint.restore``; eval_only and
    resume on weights-only folders: tests/test_reference.py)."""
    _, checkpoint, out, _ = retrieval
    exported, original = multitask.load(out), multitask.load(checkpoint)
    texts = ["a red ball moves left", "a blue square"]
    frames = torch.randn(3, exported.num_frames, 3, exported.image_size, exported.image_size)
    mask = torch.ones(3, exported.num_frames, dtype=torch.long)
    assert torch.equal(exported.embed_texts(texts), original.embed_texts(texts))
    assert torch.equal(exported.similarity(frames, mask, texts), original.similarity(frames, mask, texts))


@pytest.mark.parametrize("task, asset", [("caption", "tokenizer.model"), ("qa", "answers.json")])
def test_the_task_files_travel_with_the_weights(e2e_run, tmp_path, task, asset):
    checkpoint = e2e_run(task)[1] / "checkpoints" / "last"
    out = multitask.export(checkpoint, tmp_path / "model")
    assert (out / asset).read_bytes() == (checkpoint / asset).read_bytes()
    exported, original = multitask.load(out).task, multitask.load(checkpoint).task
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(), original.state_dict().values()))


def test_push_to_hub_uploads_the_folder(retrieval, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs["folder_path"], kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ConfigError, match="needs a Hugging Face login"):
        multitask.export(retrieval[1], tmp_path / "not-logged-in", push_to_hub="me/emcl")
    assert not (tmp_path / "not-logged-in").exists() and not calls  # stopped before any work
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token")
    out = multitask.export(retrieval[1], tmp_path / "model", push_to_hub="me/emcl", private=True)
    assert calls == [("create_repo", "me/emcl", {"repo_type": "model", "private": True, "exist_ok": True}),
                     ("upload_folder", str(out), {"repo_id": "me/emcl", "repo_type": "model", "folder_path": str(out),
                                                  "commit_message": "multitask export of model"})]
    with pytest.raises(ConfigError, match="exists and is not an empty folder"):
        multitask.export(retrieval[1], out)
