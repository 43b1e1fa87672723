"""Video QA: MSRVTT-QA parsing (both layouts), answer vocabulary, accuracy, the task's losses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import full_config

from multitask.data.msrvtt_qa import qa_tables
from multitask.data.tables import AnnotationError
from multitask.errors import ConfigError
from multitask.metrics import qa_metrics
from multitask.task import build_task
from tasks.qa import UNKNOWN, answer_vocabulary


def qa_cfg(emcl: bool = True, to_classifier: bool = False, num_answers: int = 4) -> dict:
    return {"task": {"name": "qa", "num_answers": num_answers, "emcl_loss_weight": 0.5,
                     "emcl_features_to_classifier": to_classifier,
                     "classifier": {"proj_dim": 16, "hidden_dim": 32, "dropout": 0.0}},
            "data": {"max_words": 16, "num_frames": 4},
            "model": {"clip": "emcl-tiny", "temporal": "mean", "pooling": "mean",
                      "emcl": {"enabled": emcl, "num_bases": 8, "iters": 3, "momentum": 0.9, "sigma": 1.0,
                               "beta": 3.0}}}


def write_qa(root: Path, split: str, records: list[dict], jsonl: bool = False) -> None:
    folder = root / "msrvtt_qa"
    folder.mkdir(parents=True, exist_ok=True)
    if jsonl:
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        (folder / f"{split}_qa.json").write_text(json.dumps(records))


def test_json_and_jsonl_layouts(tmp_path):
    write_qa(tmp_path, "train", [{"question": "what is the man driving?", "answer": "car", "video_id": 0, "id": 7,
                                  "category_id": 0},
                                 {"question": "who drives?", "answer": "man", "video_id": 12, "id": 8,
                                  "category_id": 1}])
    write_qa(tmp_path, "test", [{"question": "where are they?", "answer": "kitchen", "video_id": "video7010",
                                 "answer_type": "where"},
                                {"question": "how does it move?", "answer": "fast", "video_id": "7011"},
                                {"question": "is it red?", "answer": "yes", "video_id": 3}], jsonl=True)
    train, test = qa_tables(tmp_path)
    assert train[0] == {"video_id": "video0", "question": "what is the man driving?", "answer": "car",
                        "category": "what", "question_id": 7}
    assert list(train["category"]) == ["what", "who"]
    assert list(test["video_id"]) == ["video7010", "video7011", "video3"]
    assert list(test["category"]) == ["where", "how", "other"]  # answer_type, else the first word
    assert list(test["question_id"]) == [0, 1, 2]


@pytest.mark.parametrize("record, message", [
    ({"question": "what?", "answer": "x", "video_id": "clip9"}, "neither a number nor 'video<number>'"),
    ({"question": "what?", "video_id": 1}, "missing field 'answer'"),
    ({"question": "what?", "answer": "x", "video_id": 1, "category_id": 7}, "'category_id' 7 is not one of 0-4"),
])
def test_bad_records_are_named(tmp_path, record, message):
    write_qa(tmp_path, "train", [record])
    write_qa(tmp_path, "test", [record])
    with pytest.raises(AnnotationError, match=message):
        qa_tables(tmp_path)


def test_missing_split_names_both_layouts(tmp_path):
    write_qa(tmp_path, "train", [{"question": "q", "answer": "a", "video_id": 1}])
    with pytest.raises(AnnotationError, match="test_qa.json or .*test.jsonl"):
        qa_tables(tmp_path)


def test_synthetic_questions_cover_all_test_videos(tiny_root):
    train, test = qa_tables(tiny_root)
    assert set(train["category"]) == {"what", "how"} and len(test) >= 24
    assert set(test["video_id"]) <= {f"video{i}" for i in range(44, 68)}


def test_answer_vocabulary_by_frequency():
    answers = ["b", "a", "c", "a", "b", "a", "d"]
    assert answer_vocabulary(answers, 2) == ["a", "b"]
    assert answer_vocabulary(answers, 10) == ["a", "b", "c", "d"]  # ties keep first-seen order


def test_qa_metrics_hand_computed():
    ranked = [["car", "bus"], ["man", "woman"], ["red", "blue", "green", "pink", "black"], ["dog"]]
    answers = ["car", "woman", "black", "kitchen"]  # "kitchen" is outside the vocabulary: always wrong
    metrics = qa_metrics(ranked, answers, ["what", "who", "what", "where"])
    assert metrics["accuracy"] == 25.0 and metrics["top5_accuracy"] == 75.0
    assert metrics["accuracy/what"] == 50.0 and metrics["accuracy/who"] == 0.0 and metrics["accuracy/where"] == 0.0
    with pytest.raises(ValueError, match="one ranked list, answer and category per question"):
        qa_metrics(ranked, answers[:2], ["what"] * 2)


def qa_batch(answers: list[str]) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"video": torch.randn(len(answers), 4, 3, 64, 64, generator=g),
            "video_mask": torch.ones(len(answers), 4, dtype=torch.long),
            "question": [f"what colour is shape {i}?" for i in range(len(answers))], "answer": answers}


class _Train:
    def __init__(self, answers: list[str]) -> None:
        self.rows = {"answer": answers}


class _Data:
    def __init__(self, answers: list[str]) -> None:
        self.train = _Train(answers)


def test_forward_terms_unknown_answers_and_options():
    data = _Data(["red", "red", "blue", "green", "pink", "red", "blue"])
    torch.manual_seed(0)
    task = build_task(full_config(qa_cfg(num_answers=2)), data).train()
    assert task.answers == ["red", "blue"]
    assert task.targets(["blue", "green"], torch.device("cpu")).tolist() == [1, UNKNOWN]
    out = task(qa_batch(["red", "blue", "green", "red"]))
    assert set(out) == {"loss", "answer_loss", "contrastive_loss"}
    out["loss"].backward()
    assert task.backbone.clip.transformer.resblocks[0].mlp.c_fc.weight.grad.abs().sum() > 0
    all_unknown = task(qa_batch(["green", "pink"]))["answer_loss"]
    assert all_unknown.item() == 0.0 and all_unknown.requires_grad  # no NaN when nothing is counted
    base = build_task(full_config(qa_cfg(emcl=False)), data)
    assert base.emcl is None and set(base(qa_batch(["red", "blue"]))) == {"loss", "answer_loss"}


def test_emcl_features_reach_the_classifier_only_when_asked():
    data = _Data(["red", "blue", "green"])
    torch.manual_seed(0)
    plain = build_task(full_config(qa_cfg(to_classifier=False, num_answers=3)), data).eval()
    torch.manual_seed(0)
    fed = build_task(full_config(qa_cfg(to_classifier=True, num_answers=3)), data).eval()
    video, question = torch.randn(6, 128), torch.randn(6, 128)
    direct = plain.classifier(video, question)
    assert torch.allclose(plain.logits(video, question, block_size=3), direct)
    assert not torch.allclose(fed.logits(video, question, block_size=3), direct, atol=1e-4)


def test_reference_network_trains_and_ignores_padding_by_default():
    data = _Data(["red", "blue", "green"])
    torch.manual_seed(0)
    cfg = full_config(qa_cfg(num_answers=3), "task.network=emcl_qa")
    cfg["model"].update(temporal="transformer_projected", temporal_layers=1)
    task = build_task(cfg, data).train()
    out = task(qa_batch(["red", "blue", "pink"]))
    assert set(out) == {"loss", "answer_loss", "contrastive_loss"}
    out["loss"].backward()
    for part in (task.question_pool.score[0], task.video_pool.score[2], task.backbone.temporal.out_proj,
                 task.classifier.mlp[0]):
        assert part.weight.grad.abs().sum() > 0
    task.eval()
    frames = torch.randn(1, 4, 128)
    padded = torch.cat([frames, torch.randn(1, 2, 128)], dim=1)  # two padded frames holding garbage
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    assert torch.allclose(task.pool_video(frames, torch.ones(1, 4)), task.pool_video(padded, mask), atol=1e-6)
    with pytest.raises(ConfigError, match="unknown task.network 'nope'"):
        build_task(full_config(qa_cfg(), "task.network=nope"), data)
