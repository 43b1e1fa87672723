"""``trainer.compile`` (regional, in place) and the attention path: compiled blocks give the eager step's
loss and gradients and leave the state dict's names alone; every attention of the towers, the frame
transformer and the caption decoder runs through ``F.scaled_dot_product_attention``, whose fused kernel
agrees with the math path."""
from __future__ import annotations

import copy

import pytest
import torch
from accelerate.utils import DynamoBackend
from conftest import tiny_backbone
from test_distributed import global_batch
from torch.nn.attention import SDPBackend, sdpa_kernel

from multitask.compiling import compile_blocks
from multitask.emcl import EMCL
from multitask.engine import make_accelerator
from multitask.perf import AttentionKernels
from tasks.caption import CaptionDecoder
from tasks.retrieval import RetrievalTask

TOWER_BLOCKS = {f"clip.visual.transformer.resblocks.{i}" for i in range(3)} | \
    {f"clip.transformer.resblocks.{i}" for i in range(2)} | {"temporal.transformer.resblocks.0"}


def paper_like_task(chunks: int = 1) -> RetrievalTask:
    """The tiny towers with the paper's structure: frame transformer, text-conditioned pooling, EMCL."""
    torch.manual_seed(0)
    backbone = tiny_backbone(temporal="transformer", temporal_layers=1, pooling="text_conditioned", chunks=chunks)
    return RetrievalTask(backbone, EMCL(num_bases=4, iters=3)).train()


def loss_and_grads(task: RetrievalTask, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    loss = task(batch)["loss"]
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in task.parameters() if p.grad is not None])


@pytest.mark.parametrize("backend, tolerance", [
    ("aot_eager", 1e-6),  # dynamo's graph capture and AOTAutograd's joint graph, without code generation
    pytest.param("inductor", 1e-4, marks=pytest.mark.slow)])  # the real thing: ~2 min of C++ compiles on 2 cores
def test_compiled_blocks_match_eager_and_keep_the_state_dict(backend, tolerance):
    """Compiled blocks under gradient caching give the eager step's loss and gradients."""
    batch = {k: v[:4] for k, v in global_batch().items()}  # a padded clip among them
    eager = paper_like_task(chunks=2)
    compiled = copy.deepcopy(eager)
    names = compile_blocks(compiled.backbone, backend=backend)
    assert set(names) == TOWER_BLOCKS
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. anywhere
    loss, grads = loss_and_grads(compiled, batch)
    eager_loss, eager_grads = loss_and_grads(eager, batch)
    assert torch.allclose(loss, eager_loss, atol=tolerance)
    assert torch.allclose(grads, eager_grads, atol=tolerance, rtol=100 * tolerance)
    fresh = paper_like_task()
    fresh.load_state_dict(compiled.state_dict())  # a compiled run's checkpoint loads into an eager model
    compiled.load_state_dict(eager.state_dict())  # and the other way round


def test_launcher_dynamo_backend_is_replaced_by_trainer_compile(monkeypatch):
    """``accelerate launch --dynamo_backend`` would compile the whole task and prefix every key of the
    checkpoints with ``_orig_mod.``; the accelerator keeps dynamo off (``trainer.compile`` is the switch)."""
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")
    accelerator = make_accelerator({"mixed_precision": "no", "grad_accum": 1})
    assert accelerator.state.dynamo_plugin.backend == DynamoBackend.NO


def test_towers_and_frame_transformer_attend_through_sdpa_and_the_math_path_agrees():
    task = paper_like_task()
    backbone = task.backbone
    batch = {k: v[:2] for k, v in global_batch().items()}
    tokens = backbone.tokenize(batch["text"])

    def encode() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        backbone.zero_grad()
        frames, text = backbone.encode_frames(batch["video"], batch["video_mask"]), backbone.encode_text(tokens)
        (frames.square().mean() + text.square().mean()).backward()
        return frames.detach(), text.detach(), backbone.clip.visual.conv1.weight.grad.clone()

    with AttentionKernels() as fused:
        outputs = encode()
    with sdpa_kernel(SDPBackend.MATH), AttentionKernels() as math:
        reference = encode()
    assert fused.counts == {"fused (cpu)": 6}  # 3 image blocks, 2 text blocks, 1 frame block
    assert math.counts == {"math": 6}
    for out, ref in zip(outputs, reference):
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_caption_decoder_attends_through_sdpa():
    torch.manual_seed(0)
    decoder = CaptionDecoder(vocab_size=50, memory_dim=16, width=32, layers=1, heads=2, max_length=12,
                             dropout=0.1).eval()  # the CPU's fused kernel takes no dropout; CUDA's do
    tokens, memory = torch.randint(4, 50, (2, 7)), torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad(), AttentionKernels() as fused:
        logits = decoder(tokens, memory, mask)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        reference = decoder(tokens, memory, mask)
    assert decoder.gpt.config._attn_implementation == "sdpa"
    assert fused.counts == {"fused (cpu)": 2}  # self- and cross-attention
    assert torch.allclose(logits, reference, atol=1e-5)
