"""Video captioning: a GPT-2 decoder (transformers) cross-attending to the video tokens, with EMCL
between the video feature and the ground-truth caption's CLIP text feature (docs/architecture.md)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from multitask.backbone import VideoTextBackbone, masked_mean
from multitask.caption_tokenizer import BOS, EOS, FILE_NAME, PAD, CaptionTokenizer, train_tokenizer
from multitask.dist import broadcast_object, gather_objects, rank, world_size
from multitask.emcl import EMCL
from multitask.encoding import encode_videos, shard
from multitask.errors import ConfigError
from multitask.losses import global_mean_cross_entropy, paired_emcl
from multitask.metrics import caption_metrics
from multitask.task import Shared, Task, register_task
from multitask.types import EvalResult, TaskData


class CaptionDecoder(nn.Module):
    """GPT-2 with cross-attention over video tokens projected to the decoder width."""

    def __init__(self, vocab_size: int, memory_dim: int, width: int, layers: int, heads: int, max_length: int,
                 dropout: float) -> None:
        super().__init__()
        self.memory = nn.Sequential(nn.Linear(memory_dim, width), nn.LayerNorm(width))
        config = GPT2Config(vocab_size=vocab_size, n_positions=max_length, n_embd=width, n_layer=layers, n_head=heads,
                            add_cross_attention=True, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                            bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                            attn_implementation="sdpa")  # F.scaled_dot_product_attention, as the towers
        self.gpt = GPT2LMHeadModel(config)
        self.max_length = max_length

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """tokens: (B, L), memory: (B, M, D), memory_mask: (B, M) -> next-token logits (B, L, V)."""
        return self.gpt(input_ids=tokens, attention_mask=(tokens != PAD).long(),
                        encoder_hidden_states=self.memory(memory), encoder_attention_mask=memory_mask).logits

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, memory_mask: torch.Tensor, num_beams: int = 1,
                 max_length: int | None = None) -> torch.Tensor:
        """Greedy (num_beams=1) or beam search with the key/value cache -> (B, <=max_length) ids from bos."""
        start = torch.full((memory.shape[0], 1), BOS, dtype=torch.long, device=memory.device)
        return self.gpt.generate(input_ids=start, attention_mask=torch.ones_like(start),
                                 encoder_hidden_states=self.memory(memory), encoder_attention_mask=memory_mask,
                                 max_length=max_length or self.max_length, num_beams=num_beams, do_sample=False,
                                 use_cache=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)


class CaptionTask(Task):
    """Teacher-forced cross-entropy on the decoder, plus (with EMCL) an InfoNCE between the
    reconstructed video and caption features weighted by ``emcl_loss_weight``. The decoder reads the
    frame tokens and the (reconstructed) video token."""

    name = "caption"
    serves = ("caption",)

    def __init__(self, backbone: VideoTextBackbone, emcl: EMCL | None, tokenizer: CaptionTokenizer,
                 decoder: CaptionDecoder, emcl_loss_weight: float, label_smoothing: float, num_beams: int,
                 max_length: int) -> None:
        super().__init__(backbone, emcl)
        self.tokenizer, self.decoder = tokenizer, decoder
        self.emcl_loss_weight, self.label_smoothing = emcl_loss_weight, label_smoothing
        self.num_beams, self.max_length = num_beams, max_length

    def save_assets(self, folder: Path) -> None:
        self.tokenizer.save(Path(folder) / FILE_NAME)

    @staticmethod
    def memory(frames: torch.Tensor, mask: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame tokens (B, T, D) plus the video token (B, D) -> memory (B, T+1, D) and its mask."""
        memory = torch.cat([frames, video.unsqueeze(1).to(frames.dtype)], dim=1)
        return memory, torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        device = batch["video"].device
        frames = self.backbone.encode_frames(batch["video"], batch["video_mask"])  # (b, T, D)
        video = masked_mean(frames, batch["video_mask"])  # (b, D)
        terms: dict[str, torch.Tensor] = {}
        if self.emcl is not None:
            text = self.backbone.encode_strings(batch["text"])  # (b, D)
            video, _, contrastive = paired_emcl(self.emcl, video.float(), text.float(), self.backbone.logit_scale())
            terms["contrastive_loss"] = self.emcl_loss_weight * contrastive
        tokens = self.tokenizer.encode(batch["text"], self.max_length).to(device)  # (b, L)
        logits = self.decoder(tokens[:, :-1], *self.memory(frames, batch["video_mask"], video))  # (b, L-1, V)
        terms["caption_loss"] = global_mean_cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), PAD,
                                                          self.label_smoothing)
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def video_features(self, frames: torch.Tensor, mask: torch.Tensor, block_size: int) -> torch.Tensor:
        """(V, D) video tokens for inference: EMCL on the video rows alone, per fixed block, from the learned mean."""
        video = masked_mean(frames, mask)  # (V, D)
        if self.emcl is None:
            return video
        return torch.cat([self.emcl(video[i: i + block_size]) for i in range(0, video.shape[0], block_size)])

    @torch.no_grad()
    def caption_frames(self, frames: torch.Tensor, mask: torch.Tensor, block_size: int, batch_size: int) -> list[str]:
        """Captions for (N, T, D) frame features and (N, T) masks: the video tokens (EMCL per block of
        ``block_size`` videos), then generation in batches."""
        return self.generate(frames, mask, self.video_features(frames, mask, block_size), batch_size)

    @torch.no_grad()
    def generate(self, frames: torch.Tensor, mask: torch.Tensor, video: torch.Tensor, batch_size: int) -> list[str]:
        """Captions for (N, T, D) frames, (N, T) masks and (N, D) video tokens, in batches."""
        texts = []
        for i in tqdm(range(0, frames.shape[0], batch_size), desc="captioning", disable=rank() != 0, leave=False):
            memory = self.memory(frames[i: i + batch_size], mask[i: i + batch_size], video[i: i + batch_size])
            texts += self.tokenizer.decode(self.decoder.generate(*memory, self.num_beams, self.max_length).cpu())
        return texts

    @torch.no_grad()
    def evaluate(self, data: TaskData, device: torch.device, eval_cfg: dict, num_workers: int) -> EvalResult:
        """Caption every test video (each rank a shard), score against all its references on rank 0."""
        videos = encode_videos(self.backbone, data.test, device, eval_cfg["batch_size"], num_workers)
        keep, all_ids = videos.kept(), data.test.video_ids()
        frames, mask = videos.frames[keep], videos.mask[keep]  # the videos that loaded: (V, T, D), (V, T)
        video = self.video_features(frames, mask, eval_cfg["block_size"])  # (V, D), same on every rank
        mine = shard(len(keep), rank(), world_size())
        texts = gather_objects(self.generate(frames[mine.start: mine.stop], mask[mine.start: mine.stop],
                                             video[mine.start: mine.stop], eval_cfg["batch_size"]))
        ids = [all_ids[i] for i in keep]
        captions = [data.test.rows[i]["captions"] for i in keep]
        metrics = caption_metrics(dict(zip(ids, texts)), dict(zip(ids, captions))) if rank() == 0 else None
        predictions = [{"image_id": v, "caption": t} for v, t in zip(ids, texts)]
        skipped = {all_ids[i]: why for i, why in videos.failed.items()}
        return EvalResult(broadcast_object(metrics), len(ids), predictions, skipped=skipped)


def caption_tokenizer(task_cfg: dict, data: TaskData | None, assets: Path | None) -> CaptionTokenizer:
    """From the checkpoint, else ``task.tokenizer``, else trained on the training captions on rank 0."""
    if assets is not None and (Path(assets) / FILE_NAME).is_file():
        return CaptionTokenizer.load(Path(assets) / FILE_NAME)
    if task_cfg["tokenizer"]:
        return CaptionTokenizer.load(task_cfg["tokenizer"])
    if data is None:
        raise ConfigError("task=caption needs a tokenizer: a checkpoint holding one, task.tokenizer, or training data")
    proto = train_tokenizer(data.train.captions()[0], task_cfg["vocab_size"]) if rank() == 0 else None
    return CaptionTokenizer(broadcast_object(proto))


@register_task("caption")
def build_caption(cfg: dict, data: TaskData | None, assets: Path | None, shared: Shared) -> CaptionTask:
    task = cfg["task"]
    tokenizer = caption_tokenizer(task, data, assets)
    backbone, emcl = shared
    decoder = CaptionDecoder(tokenizer.vocab_size, backbone.embed_dim, max_length=task["max_length"], **task["decoder"])
    return CaptionTask(backbone, emcl, tokenizer, decoder, emcl_loss_weight=task["emcl_loss_weight"],
                       label_smoothing=task["label_smoothing"], num_beams=task["num_beams"],
                       max_length=task["max_length"])
