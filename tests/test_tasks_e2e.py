"""task=caption and task=qa end to end as subprocesses: run directory, checkpoint files, reloading,
and two-process evaluation."""
import json
import subprocess
import sys

import pytest
import torch
import transformers
from conftest import GEN, REPO, run_train

EXPECTED = {"caption": {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"},
            "qa": {"accuracy", "top5_accuracy", "accuracy/what", "accuracy/how"}}
ASSET = {"caption": "tokenizer.model", "qa": "answers.json"}
# eval_only must take the tokenizer / answers and the head's architecture from the checkpoint, whatever these say
OTHER_ASSETS = {"caption": ("task.vocab_size=40", "task.decoder.width=64", "task.max_length=40"),
                "qa": ("task.num_answers=3", "task.classifier.hidden_dim=64")}


@pytest.fixture(scope="module", params=["caption", "qa"])
def trained(request, e2e_run):
    _, out, _ = e2e_run(request.param)
    return request.param, out


def test_run_directory_and_predictions(trained):
    task, out = trained
    report = json.loads((out / "eval.json").read_text())
    assert report["task"] == task and set(report["metrics"]) >= EXPECTED[task]
    predictions = json.loads((out / "predictions.json").read_text())
    assert report["num_samples"] == len(predictions)
    if task == "caption":
        assert report["num_samples"] == 24  # the test split's videos
        assert all(set(p) == {"image_id", "caption"} and p["image_id"].startswith("video") for p in predictions)
    else:
        questions = json.loads((out.parent / "data" / "msrvtt_qa" / "test_qa.json").read_text())
        assert [p["question_id"] for p in predictions] == [q["id"] for q in questions]
        assert all(p["answer"] == q["answer"] for p, q in zip(predictions, questions))
        answers = json.loads((out / "answers.json").read_text())
        assert all(p["prediction"] in answers for p in predictions)
    assert (out / ASSET[task]).is_file()
    assert (out / "checkpoints" / "last" / ASSET[task]).read_bytes() == (out / ASSET[task]).read_bytes()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "contrastive_loss", f"{'caption' if task == 'caption' else 'answer'}_loss"} <= set(records[-1])
    env = json.loads((out / "environment.json").read_text())
    assert env["num_processes"] == 1 and env["device"] == "cpu" and env["mixed_precision"] == "no"
    assert env["torch"] == torch.__version__ and env["packages"]["transformers"] == transformers.__version__


def test_eval_only_uses_the_checkpoint_files(trained):
    task, out = trained
    again = out.parent / f"eval-{task}"
    result = run_train(f"task={task}", "debug=quick", f"data.root={out.parent / 'data'}", GEN, f"output_dir={again}",
                       "eval_only=true", f"checkpoint={out / 'checkpoints' / 'last'}", *OTHER_ASSETS[task])
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads((out / "eval.json").read_text())["metrics"]
    second = json.loads((again / "eval.json").read_text())["metrics"]
    assert first == pytest.approx(second, abs=1e-9)
    assert (out / "predictions.json").read_text() == (again / "predictions.json").read_text()


def test_two_process_evaluation_equals_one(trained):
    task, out = trained
    target = out.parent / f"eval2-{task}"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train.py"),
           f"task={task}", "debug=quick", f"data.root={out.parent / 'data'}", GEN, f"output_dir={target}",
           "eval_only=true", f"checkpoint={out / 'checkpoints' / 'last'}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((d / "eval.json").read_text()) for d in (out, target))
    assert two["num_samples"] == one["num_samples"]
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-6)
    assert json.loads((target / "predictions.json").read_text()) == json.loads((out / "predictions.json").read_text())
    assert json.loads((target / "environment.json").read_text())["num_processes"] == 2
