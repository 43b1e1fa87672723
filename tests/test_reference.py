"""Equivalence with the public EMCL-Net: importing its checkpoints, and the numbers it computes
(golden values in tests/data, produced once by the reference code; see tests/data/README.md)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GEN, run_train
from reference_fixtures import CAPTIONS, reference_inputs, reference_mean, reference_state
from safetensors.torch import load_file

import multitask
from multitask.reference import ReferenceCheckpointError

DATA = Path(__file__).parent / "data"
GOLDEN = json.loads((DATA / "emcl_net_tiny_golden.json").read_text())


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reference") / "pytorch_model.bin.4"
    torch.save(reference_state("emcl-tiny"), path)  # as EMCL-Net's training script saves its model
    return path


@pytest.fixture(scope="module")
def imported(reference_file) -> Path:
    return multitask.import_reference(reference_file, reference_file.parent / "imported", clip="emcl-tiny",
                                      emcl_mean=reference_mean(), num_frames=4)


def _close(ours: torch.Tensor, golden: list, atol: float = 1e-5) -> float:
    diff = (ours - torch.tensor(golden)).abs().max().item()
    assert diff < atol, diff
    return diff


def test_reference_compat_equals_the_reference_padded_frames_included(imported):
    model = multitask.load(imported, reference_compat=True)
    frames, mask = reference_inputs()
    _close(model.similarity(frames, mask, CAPTIONS), GOLDEN["similarity"])
    assert model.loss(frames, mask, CAPTIONS).item() == pytest.approx(GOLDEN["loss"], abs=1e-5)


def test_default_equals_the_reference_on_unpadded_videos_only(imported):
    model = multitask.load(imported)
    frames, mask = reference_inputs()
    _close(model.similarity(frames[:2], mask[:2], CAPTIONS[:2]), GOLDEN["similarity_unpadded"])
    assert model.loss(frames[:2], mask[:2], CAPTIONS[:2]).item() == pytest.approx(GOLDEN["loss_unpadded"], abs=1e-5)
    padded = (model.similarity(frames, mask, CAPTIONS) - torch.tensor(GOLDEN["similarity"])).abs()[:, 2]
    assert padded.max() > 1e-3  # our frame weights are renormalised over the real frames: a deliberate difference


def test_unclamped_logit_scale_under_compat(imported, tmp_path):
    state = reference_state("emcl-tiny")
    state["clip.logit_scale"] = torch.tensor(4.7)  # exp(4.7) = 110 > CLIP's clamp at 100
    torch.save(state, tmp_path / "ref.bin")
    folder = multitask.import_reference(tmp_path / "ref.bin", tmp_path / "out", clip="emcl-tiny",
                                        emcl_mean=reference_mean(), num_frames=4)
    frames, mask = reference_inputs()
    compat = multitask.load(folder, reference_compat=True).loss(frames, mask, CAPTIONS).item()
    assert compat == pytest.approx(GOLDEN["loss_logit_scale_4.7"], abs=1e-5)
    assert abs(multitask.load(folder).loss(frames, mask, CAPTIONS).item() - compat) > 1e-3


def test_loss_leaves_the_emcl_mean_as_stored(imported):
    model = multitask.load(imported)
    before = model.task.emcl.mean.clone()
    frames, mask = reference_inputs()
    model.loss(frames, mask, CAPTIONS)
    assert torch.equal(model.task.emcl.mean, before) and torch.equal(before, reference_mean())
    with pytest.raises(ValueError, match="2 texts for 3 videos"):
        model.loss(frames, mask, CAPTIONS[:2])


def test_tokeniser_follows_the_reference_rule_on_real_captions(imported):
    golden = json.loads((DATA / "reference_tokens.json").read_text())
    tokens = multitask.load(imported).backbone.tokenize(golden["texts"])
    assert torch.equal(tokens, torch.tensor(golden["max_words_32"]))
    assert GOLDEN["tokens"] == multitask.load(imported).backbone.tokenize(CAPTIONS).tolist()


def test_imported_folder_layout_and_mapping(imported, reference_file):
    meta = json.loads((imported / "meta.json").read_text())
    assert meta["weights_only"] and meta["step"] == 0 and meta["source"] == "emcl"
    ours, theirs = load_file(str(imported / "model.safetensors")), torch.load(reference_file, weights_only=True)
    assert torch.equal(ours["backbone.clip.positional_embedding"], theirs["clip.positional_embedding"][:32])
    assert torch.equal(ours["backbone.temporal.frame_position.weight"][:77], theirs["frame_position_embeddings.weight"])
    assert torch.equal(ours["backbone.temporal.transformer.resblocks.3.mlp.c_fc.weight"],
                       theirs["transformerClip.resblocks.3.mlp.c_fc.weight"])
    assert torch.equal(ours["emcl.mean"], reference_mean())
    conf = (imported / "config.yaml").read_text()
    assert "quick_gelu: true" in conf and "pooling: text_conditioned" in conf


def test_fp16_checkpoints_are_upcast(tmp_path):
    state = {k: v.half() if v.dim() >= 2 else v for k, v in reference_state("emcl-tiny").items()}
    torch.save(state, tmp_path / "half.bin")
    folder = multitask.import_reference(tmp_path / "half.bin", tmp_path / "out", clip="emcl-tiny",
                                        emcl_mean=reference_mean(), num_frames=4)
    weights = load_file(str(folder / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values())


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update({"extra.weight": torch.zeros(1)}), "unknown keys: extra.weight"),
    (lambda s: s.pop("transformerClip.resblocks.0.ln_1.bias"), "missing keys .*resblocks.0.ln_1.bias"),
    (lambda s: s.update({"lstm_visual.weight_ih_l0": torch.zeros(1)}), "seqLSTM"),
    (lambda s: s.update({"clip.visual.ln_post.weight": torch.ones(64)}), "clip.visual.ln_post.weight \\(64,\\)"),
])
def test_bad_checkpoints_get_one_clear_error(tmp_path, edit, message):
    state = reference_state("emcl-tiny")
    edit(state)
    torch.save(state, tmp_path / "ref.bin")
    with pytest.raises(ReferenceCheckpointError, match=message):
        multitask.import_reference(tmp_path / "ref.bin", tmp_path / "out", clip="emcl-tiny", emcl_mean=reference_mean())


def test_wrong_clip_names_the_shapes(reference_file, tmp_path):
    theirs = r"CLIP \(vision 3 x 128, patch 16, image 64 px, text 2 x 128, embedding 128\) is not --clip ViT-B-32"
    with pytest.raises(ReferenceCheckpointError, match=theirs + r" \(vision 12 x 768, patch 32"):
        multitask.import_reference(reference_file, tmp_path / "out", clip="ViT-B-32")
    with pytest.raises(ReferenceCheckpointError, match="--clip ViT-Q-99: unknown model.clip"):
        multitask.import_reference(reference_file, tmp_path / "out", clip="ViT-Q-99")
    with pytest.raises(ValueError, match="16 entries; model.emcl.num_bases is 32"):
        multitask.import_reference(reference_file, tmp_path / "out", clip="emcl-tiny", emcl_mean=torch.zeros(16))


@pytest.mark.parametrize("header", ["meanP", "seqTransf"])
def test_clip4clip_checkpoints_under_compat_equal_clip4clip(tmp_path, header):
    golden = json.loads((DATA / "clip4clip_tiny_golden.json").read_text())[header]
    state = reference_state("emcl-tiny")
    if header == "meanP":
        state = {k: v for k, v in state.items() if k.startswith("clip.")}
    torch.save(state, tmp_path / "pytorch_model.bin.0")
    folder = multitask.import_reference(tmp_path / "pytorch_model.bin.0", tmp_path / "out", clip="emcl-tiny",
                                        source="clip4clip", num_frames=4)
    model = multitask.load(folder, reference_compat=True)
    assert model.task.emcl is None and model.conf["model"]["temporal"] == ("mean" if header == "meanP"
                                                                                 else "transformer")
    frames, mask = reference_inputs()
    _close(model.similarity(frames, mask, CAPTIONS), golden["cosine"])
    assert model.loss(frames, mask, CAPTIONS).item() == pytest.approx(golden["loss"], abs=1e-5)


def test_eval_only_and_resume_accept_an_imported_folder(tiny_root, imported, tmp_path):
    common = ("task=retrieval", "debug=quick", f"data.root={tiny_root}", GEN)
    evaluated = run_train(*common, f"output_dir={tmp_path / 'eval'}", "eval_only=true", f"checkpoint={imported}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["num_samples"] == 16
    assert (tmp_path / "eval" / "similarity.safetensors").is_file()
    arch = ("model.temporal=transformer", "model.temporal_layers=4", "model.pooling=text_conditioned",
            "trainer.max_steps=2", "trainer.lr=1e-6", "trainer.lr_backbone=1e-6")
    trained = run_train(*common, *arch, f"output_dir={tmp_path / 'ft'}", f"resume={imported}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "starting from the weights of" in trained.stderr
    start, after = (load_file(str(p / "model.safetensors")) for p in (imported, tmp_path / "ft/checkpoints/last"))
    moved = {k: (start[k] - after[k]).abs().max().item() for k in start}
    assert moved.pop("emcl.mean") > 0.01  # the running mean's momentum updates
    assert 0 < max(moved.values()) < 1e-4  # the weights: 2 steps at lr 1e-6 from the imported ones


def test_import_reference_command(reference_file, tmp_path, capsys):
    from multitask.cli import main

    np.save(tmp_path / "mean.npy", reference_mean().numpy())
    code = main(["import-reference", str(reference_file), "--out", str(tmp_path / "out"), "--clip", "emcl-tiny",
                 "--emcl-mean", str(tmp_path / "mean.npy"), "--num-frames", "4"])
    assert code == 0 and "checkpoint folder" in capsys.readouterr().out
    assert torch.equal(load_file(str(tmp_path / "out/model.safetensors"))["emcl.mean"], reference_mean())
    assert main(["import-reference", str(reference_file), "--out", str(tmp_path / "x"), "--clip", "ViT-B-32"]) == 2
    err = capsys.readouterr().err
    assert "is not --clip ViT-B-32" in err and "Traceback" not in err
