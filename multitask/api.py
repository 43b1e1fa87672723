"""Use a trained checkpoint on your own videos: ``multitask.load(checkpoint)``.

    model = multitask.load("outputs/retrieval/default/checkpoints/last")
    model.build_index(["a.mp4", "b.mp4"])         # or search(..., index="my.index"), a `multitask index` folder
    model.search("a red ball rolls left", k=5)    # [(video id, score), ...]
    model.caption(["a.mp4"]); model.answer("a.mp4", "what colour is the ball?")
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from multitask.ann import DEFAULT_RERANK
from multitask.backbone import masked_mean
from multitask.checkpoint import restore
from multitask.data.video_index import video_id
from multitask.decoding import DecodeError, DecoderSpec, process_decoder, require_readable
from multitask.errors import ConfigError
from multitask.search_index import SearchIndex, shortlist
from multitask.similarity import VideoTextScorer
from multitask.task import Answerer, Captioner, Task
from multitask.types import FrameFeatures
from multitask.video import load_clip
from multitask.video_io import UnreadableVideoError, VideoInfo


class Model:
    """A task module rebuilt from a checkpoint, with batched helpers over video files and texts."""

    def __init__(self, task: Task, conf: dict, checkpoint: Path, device: torch.device) -> None:
        self.task, self.conf, self.checkpoint, self.device = task.to(device).eval(), conf, checkpoint, device
        self.backbone = task.backbone
        self.num_frames, self.image_size = conf["data"]["num_frames"], conf["data"]["image_size"]
        self.block_size = conf["eval"]["block_size"]
        self.decoder = DecoderSpec(conf["data"]["decoder"], conf["data"]["decode_timeout_s"])
        self.index: FrameFeatures | None = None  # what search ranks by default (build_index)

    @property
    def task_name(self) -> str:
        return self.conf["task"]["name"]

    def _batches(self, paths: list[str], infos: dict[str, VideoInfo], batch_size: int,
                 progress: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        quiet = not progress or len(paths) <= batch_size
        for i in tqdm(range(0, len(paths), batch_size), desc="encoding videos", disable=quiet):
            clips = [self._clip(p, infos[p]) for p in paths[i: i + batch_size]]
            yield torch.stack([c[0] for c in clips]), torch.stack([c[1] for c in clips])

    def _clip(self, path: str, info: VideoInfo) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return load_clip(path, info, self.num_frames, self.image_size, decoder=process_decoder(self.decoder))
        except DecodeError as err:  # a file damaged past the frames the probe decodes, or a decoder that hangs
            raise UnreadableVideoError({path: f"undecodable while loading ({err})"}, 1) from err

    @torch.no_grad()
    def encode_frames(self, paths: list[str], batch_size: int = 16, progress: bool = True,
                      infos: dict[str, VideoInfo] | None = None, root: str | Path | None = None) -> FrameFeatures:
        """Per-frame features of every video (raises UnreadableVideoError naming each bad file); ids are
        ``video_id(path, root)``: file names without the extension, or paths relative to ``root``."""
        paths = [str(p) for p in paths]
        infos = infos if infos is not None else require_readable(paths, self.decoder)
        frames, masks = [], []
        for video, mask in self._batches(paths, infos, batch_size, progress):
            mask = mask.to(self.device)
            frames.append(self.backbone.encode_frames(video.to(self.device), mask).float().cpu())
            masks.append(mask.cpu())
        return FrameFeatures([video_id(p, root) for p in paths], torch.cat(frames), torch.cat(masks))

    def build_index(self, paths: list[str], batch_size: int = 16, root: str | Path | None = None) -> FrameFeatures:
        """Encode videos once for ``search``; kept as ``self.index`` (ids as ``encode_frames`` gives them)."""
        self.index = self.encode_frames(paths, batch_size, root=root)
        return self.index

    def embed_videos(self, paths: list[str], batch_size: int = 16) -> torch.Tensor:
        """(N, D) L2-normalised mean-pooled video embeddings (before EMCL, which works on sets)."""
        feats = self.encode_frames(paths, batch_size)
        return F.normalize(masked_mean(feats.frames, feats.mask), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """(N, D) L2-normalised text embeddings from the CLIP text tower."""
        if not texts:
            raise ConfigError("no texts given")
        out = [self.backbone.encode_strings(texts[i: i + batch_size]).float().cpu()
               for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat(out), dim=-1)

    def _serving(self, head: str) -> Task:
        """The task module that serves ``head`` (a head of a task=multi model, or the task itself)."""
        try:
            return self.task.serving(head)
        except ValueError as err:
            raise ConfigError(f"checkpoint {self.checkpoint}: {err}; {head} needs a checkpoint with a {head} "
                             "head") from err

    def pool_frames(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, T, D) per-frame features, (N, T) mask -> (N, D): the video feature retrieval pools before EMCL
        (mean pooling; for text-conditioned pooling its query-independent stand-in), L2-normalised. What the
        first stage of search ranks by, with the L2-normalised text feature."""
        pooled = VideoTextScorer(None, "mean", self.backbone.reference_compat).mean_pool(frames.float(), mask)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def search(self, query: str, k: int = 5, index: FrameFeatures | SearchIndex | str | Path | None = None,
               rerank: int = DEFAULT_RERANK, exact: bool = False) -> list[tuple[str, float]]:
        """The k best videos for ``query``, scored through EMCL as at evaluation. ``index``: features from
        ``build_index`` / ``encode_frames``, a folder written by ``multitask index`` (or opened as a
        ``SearchIndex``), or None for ``self.index``. Only the ``rerank`` best by the first stage (cosine of the
        pooled video and text features; FAISS for a folder) are scored through EMCL; ``exact`` scores all."""
        if isinstance(index, (str, Path)):
            index = SearchIndex(Path(index).expanduser())
        index = self.index if index is None else index
        if index is None or not index.ids:
            raise ConfigError("search needs an index: call build_index(paths) first, or pass index=<folder> "
                             "written by `multitask index`")
        scorer = self._serving("retrieval").scorer
        text = self.backbone.encode_strings([query]).float()  # (1, D)
        _check_dim(index, text.shape[1], self.checkpoint)
        chosen = shortlist(index, text[0], None if exact else rerank, self.pool_frames)
        sim = scorer.blockwise(text, chosen.frames.to(self.device), chosen.mask.to(self.device), self.block_size)
        top = sim[0].cpu().topk(min(k, len(chosen.ids)))
        return [(chosen.ids[i], float(s)) for s, i in zip(top.values, top.indices)]

    @torch.no_grad()
    def similarity(self, frames: torch.Tensor, frame_mask: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The (num_texts, num_videos) similarity evaluation computes, in eval mode with EMCL, all rows in one
        block. frames: (V, T, 3, H, W) CLIP-normalised; frame_mask: (V, T) of 0/1; texts: strings."""
        task = self._serving("retrieval").eval()
        mask = frame_mask.to(self.device).long()
        video = self.backbone.encode_frames(frames.to(self.device).float(), mask).float()  # (V, T, D)
        return task.scorer(self.backbone.encode_strings(texts).float(), video, mask).cpu()

    @torch.no_grad()
    def loss(self, frames: torch.Tensor, frame_mask: torch.Tensor, texts: list[str],
             answers: list[str] | None = None) -> torch.Tensor:
        """The training loss of this batch (text i pairs with video i): train mode with dropout off and the
        EMCL mean as stored (its training-mode update is undone). No gradient: a check, not a training step.
        With ``answers`` the texts are questions and the loss is the QA head's (answer i to question i)."""
        if len(texts) != frames.shape[0] or (answers is not None and len(answers) != len(texts)):
            raise ConfigError(f"loss pairs text i with video i: got {len(texts)} texts for {frames.shape[0]} videos"
                              + ("" if answers is None else f" and {len(answers)} answers"))
        batch = {"video": frames.to(self.device).float(), "video_mask": frame_mask.to(self.device).long()}
        if answers is None:
            return self._train_mode_loss(self._serving("retrieval"), {**batch, "text": list(texts)})
        return self._train_mode_loss(self._serving("qa"), {**batch, "question": list(texts), "answer": list(answers)})

    def _train_mode_loss(self, task: Task, batch: dict) -> torch.Tensor:
        buffers = {name: b.clone() for name, b in task.named_buffers()}
        task.train()
        for module in task.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        try:
            return task(batch)["loss"].cpu()
        finally:
            task.eval()
            for name, b in task.named_buffers():
                b.copy_(buffers[name])

    @torch.no_grad()
    def caption(self, paths: list[str], batch_size: int = 16) -> list[str]:
        """One generated caption per video."""
        task: Captioner = self._serving("caption")
        feats = self.encode_frames(paths, batch_size)
        return task.caption_frames(feats.frames.to(self.device), feats.mask.to(self.device), self.block_size,
                                   batch_size)

    @torch.no_grad()
    def answer(self, path: str, question: str, k: int = 1) -> str | list[str]:
        """The best answer (or the k best) to ``question`` about the video at ``path``."""
        task: Answerer = self._serving("qa")
        feats = self.encode_frames([path], progress=False)
        top = self._answer_logits(task, feats.frames, feats.mask, [question])[0].topk(min(k, len(task.answers))).indices
        answers = [task.answers[i] for i in top.tolist()]
        return answers[0] if k == 1 else answers

    @torch.no_grad()
    def answer_logits(self, frames: torch.Tensor, frame_mask: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """The (num_questions, num_answers) logits evaluation ranks answers by, in eval mode; question i is about
        video i. frames: (V, T, 3, H, W) CLIP-normalised; frame_mask: (V, T) of 0/1; questions: strings."""
        if len(questions) != frames.shape[0]:
            raise ConfigError(f"question i is about video i: got {len(questions)} questions for {frames.shape[0]} "
                              "videos")
        task: Answerer = self._serving("qa")
        mask = frame_mask.to(self.device).long()
        video = self.backbone.encode_frames(frames.to(self.device).float(), mask).float()  # (V, T, D)
        return self._answer_logits(task, video, mask, questions).cpu()

    def _answer_logits(self, task: Answerer, frames: torch.Tensor, mask: torch.Tensor,
                       questions: list[str]) -> torch.Tensor:
        """Per-frame features (V, T, D) and one question per video -> (V, num_answers)."""
        video = task.pool_video(frames.to(self.device), mask.to(self.device))  # (V, D)
        return task.logits(video, task.encode_questions(questions), self.block_size)


def _check_dim(index: FrameFeatures | SearchIndex, dim: int, checkpoint: Path) -> None:
    """A clear error for an index made by a model of another feature size."""
    held = index.dim if isinstance(index, SearchIndex) else index.frames.shape[-1]
    if held != dim:
        source = f"index {index.folder} (checkpoint {index.checkpoint})" if isinstance(index, SearchIndex) else "index"
        raise ConfigError(f"{source} holds {held}-dimensional features, but checkpoint {checkpoint} makes {dim}-"
                          "dimensional ones: search with the checkpoint the index was built with, or build an "
                          "index with this one (`multitask index VIDEO_DIR --checkpoint ... --out NEW`)")


def load(checkpoint: str | Path, device: str | None = None, reference_compat: bool | None = None) -> Model:
    """Rebuild the task from a checkpoint folder (its config.yaml, tokenizer / answers, weights).
    ``reference_compat``: override ``model.reference_compat`` (the reference code's arithmetic)."""
    overrides = {} if reference_compat is None else {"reference_compat": bool(reference_compat)}
    restored = restore(checkpoint, model_overrides=overrides)
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Model(restored.task, restored.conf, Path(checkpoint).expanduser(), chosen)
