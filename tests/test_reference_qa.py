"""Equivalence with the public EMCL video-QA network (EMCL4QA): importing its checkpoints, and its answer
logits and training loss (golden values produced once by the reference code; see tests/data/README.md)."""
import json
from pathlib import Path

import pytest
import torch
from reference_fixtures import LABELS, QUESTIONS, reference_inputs, reference_mean, reference_qa_state

import multitask
from multitask.errors import ConfigError
from multitask.reference import ReferenceCheckpointError

GOLDEN = json.loads((Path(__file__).parent / "data" / "emcl_qa_tiny_golden.json").read_text())
ANSWERS = [f"answer {i}" for i in range(10)]


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reference_qa")
    torch.save(reference_qa_state("emcl-tiny"), folder / "pytorch_model.bin.4")
    (folder / "train_ans2label.json").write_text(json.dumps({a: i for i, a in enumerate(ANSWERS)}))
    return multitask.import_reference(folder / "pytorch_model.bin.4", folder / "imported", clip="emcl-tiny",
                                      source="emcl_qa", emcl_mean=reference_mean(16), num_frames=4,
                                      answers=folder / "train_ans2label.json")


def test_tokens_and_their_mask_follow_the_reference(imported):
    model = multitask.load(imported, reference_compat=True)
    tokens = model.backbone.tokenize(QUESTIONS)
    assert tokens.tolist() == GOLDEN["question_ids"]
    assert multitask.backbone.text_token_mask(tokens).tolist() == GOLDEN["question_mask"]


def test_reference_compat_gives_the_reference_logits_and_loss(imported):
    model = multitask.load(imported, reference_compat=True)
    frames, mask = reference_inputs()
    logits = model.answer_logits(frames, mask, QUESTIONS)
    assert (logits - torch.tensor(GOLDEN["logits"])).abs().max() < 1e-5
    answers = [ANSWERS[i] for i in LABELS]
    assert model.loss(frames, mask, QUESTIONS, answers).item() == pytest.approx(GOLDEN["loss"], abs=1e-5)
    assert model.task.answers == ANSWERS


def test_training_step_moves_the_emcl_mean_as_the_reference_does(imported):
    task = multitask.load(imported, reference_compat=True).task.train()
    task.classifier.dropout.eval()
    assert torch.allclose(task.emcl.mean, torch.tensor(GOLDEN["emcl_mean"]))
    frames, mask = reference_inputs()
    with torch.no_grad():
        terms = task({"video": frames, "video_mask": mask, "question": QUESTIONS,
                      "answer": [ANSWERS[i] for i in LABELS]})
    assert terms["answer_loss"].item() == pytest.approx(GOLDEN["answer_loss"], abs=1e-5)
    assert (task.emcl.mean - torch.tensor(GOLDEN["emcl_mean_after_train"])).abs().max() < 1e-5


def test_default_pooling_renormalises_over_real_tokens(imported):
    frames, mask = reference_inputs()
    logits = multitask.load(imported).answer_logits(frames, mask, QUESTIONS)
    assert (logits - torch.tensor(GOLDEN["logits"])).abs().max() > 1e-3  # questions are always padded


def test_imported_folder_answers_questions_and_evaluates(imported, tmp_path):
    model = multitask.load(imported)
    assert model.conf["task"]["network"] == "emcl_qa" and model.conf["task"]["answers_file"] is None
    assert model.conf["model"]["emcl"]["num_bases"] == 16 and model.conf["model"]["emcl"]["iters"] == 5
    frames, mask = reference_inputs()
    best = model.answer_logits(frames, mask, QUESTIONS).argmax(dim=-1)
    assert best.shape == (3,) and model.answer_logits(frames[:1], mask[:1], QUESTIONS[:1]).shape == (1, 10)


def test_answers_must_match_the_classifier(tmp_path):
    torch.save(reference_qa_state("emcl-tiny"), tmp_path / "qa.bin")
    with pytest.raises(ConfigError, match="needs its answers"):
        multitask.import_reference(tmp_path / "qa.bin", tmp_path / "out", clip="emcl-tiny", source="emcl_qa")
    with pytest.raises(ConfigError, match="has 10 outputs; the answers given are 3"):
        multitask.import_reference(tmp_path / "qa.bin", tmp_path / "out", clip="emcl-tiny", source="emcl_qa",
                                   answers=["yes", "no", "man"])
    state = reference_qa_state("emcl-tiny")
    del state["classifier.2.weight"]
    torch.save(state, tmp_path / "broken.bin")
    with pytest.raises(ReferenceCheckpointError, match="classifier.2.weight"):
        multitask.import_reference(tmp_path / "broken.bin", tmp_path / "out", clip="emcl-tiny", source="emcl_qa",
                                   answers=ANSWERS)
