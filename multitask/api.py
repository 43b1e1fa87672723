"""Use a trained checkpoint on your own videos: ``multitask.load(checkpoint)``.

    model = multitask.load("outputs/retrieval/default/checkpoints/last")
    model.build_index(["a.mp4", "b.mp4"])         # or search(..., index="my.index"), a `multitask index` folder
    model.search("a red ball rolls left", k=5)    # [(video id, score), ...]
    model.caption(["a.mp4"]); model.answer("a.mp4", "what colour is the ball?")
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from multitask.backbone import masked_mean
from multitask.video import VideoInfo, error_summary, load_clip, probe_video


class UnreadableVideoError(ValueError):
    """Some input videos are missing or cannot be decoded; ``reasons`` maps each to why, as the message lists."""

    def __init__(self, reasons: dict[str, str], total: int) -> None:
        self.reasons = reasons
        listing = "\n".join(f"  {p}: {reason}" for p, reason in reasons.items())
        super().__init__(f"{len(reasons)} of {total} videos cannot be read:\n{listing}")


@dataclass
class FrameFeatures:
    """Per-frame features of a set of videos, before pooling and EMCL."""
    ids: list[str]
    frames: torch.Tensor  # (N, T, D)
    mask: torch.Tensor  # (N, T)


def probe_all(paths: list[str]) -> tuple[dict[str, VideoInfo], dict[str, str]]:
    """(info of readable videos, reason for each unreadable one)."""
    results = {p: probe_video(p) for p in paths}
    return ({p: r for p, r in results.items() if isinstance(r, VideoInfo)},
            {p: r for p, r in results.items() if not isinstance(r, VideoInfo)})


def require_readable(paths: list[str]) -> dict[str, VideoInfo]:
    if not paths:
        raise ValueError("no video paths given")
    good, bad = probe_all(paths)
    if bad:
        raise UnreadableVideoError(bad, len(paths))
    return good


class Model:
    """A task module rebuilt from a checkpoint, with batched helpers over video files and texts."""

    def __init__(self, task: torch.nn.Module, conf: dict, checkpoint: Path, device: torch.device) -> None:
        self.task, self.conf, self.checkpoint, self.device = task.to(device).eval(), conf, checkpoint, device
        self.backbone = task.backbone
        self.num_frames, self.image_size = conf["data"]["num_frames"], conf["data"]["image_size"]
        self.block_size = conf["eval"]["block_size"]
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
            return load_clip(path, info, self.num_frames, self.image_size)
        except Exception as err:  # a file damaged past the frames the probe decodes
            raise UnreadableVideoError({path: f"undecodable while loading ({error_summary(err)})"}, 1) from err

    @torch.no_grad()
    def encode_frames(self, paths: list[str], batch_size: int = 16, progress: bool = True,
                      infos: dict[str, VideoInfo] | None = None) -> FrameFeatures:
        """Per-frame features of every video (raises UnreadableVideoError naming each bad file)."""
        paths = [str(p) for p in paths]
        infos = infos if infos is not None else require_readable(paths)
        frames, masks = [], []
        for video, mask in self._batches(paths, infos, batch_size, progress):
            mask = mask.to(self.device)
            frames.append(self.backbone.encode_frames(video.to(self.device), mask).float().cpu())
            masks.append(mask.cpu())
        return FrameFeatures([Path(p).stem for p in paths], torch.cat(frames), torch.cat(masks))

    def build_index(self, paths: list[str], batch_size: int = 16) -> FrameFeatures:
        """Encode videos once for ``search`` (ids: file names without extension); kept as ``self.index``."""
        self.index = self.encode_frames(paths, batch_size)
        return self.index

    def embed_videos(self, paths: list[str], batch_size: int = 16) -> torch.Tensor:
        """(N, D) L2-normalised mean-pooled video embeddings (before EMCL, which works on sets)."""
        feats = self.encode_frames(paths, batch_size)
        return F.normalize(masked_mean(feats.frames, feats.mask), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """(N, D) L2-normalised text embeddings from the CLIP text tower."""
        if not texts:
            raise ValueError("no texts given")
        out = [self.backbone.encode_text(self.backbone.tokenize(texts[i: i + batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat(out), dim=-1)

    def _head(self, name: str) -> torch.nn.Module:
        """The task module that serves ``name`` (a head of a task=multi model, or the task itself)."""
        if name not in getattr(self.task, "heads", ()):
            raise ValueError(f"checkpoint {self.checkpoint} was trained for task={self.task_name}; {name} needs a "
                             f"checkpoint with a {name} head")
        return self.task.tasks[name] if self.task_name == "multi" else self.task

    @torch.no_grad()
    def search(self, query: str, k: int = 5, index: FrameFeatures | str | Path | None = None) -> list[tuple[str, float]]:
        """The k best videos for ``query``, scored through EMCL as at evaluation. ``index``: features from
        ``build_index`` / ``encode_frames``, a folder written by ``multitask index``, or None for ``self.index``."""
        from multitask.search_index import load_index
        from tasks.retrieval import blockwise_similarity

        if isinstance(index, (str, Path)):
            index = load_index(Path(index).expanduser())[0]
        index = self.index if index is None else index
        if index is None or not index.ids:
            raise ValueError("search needs an index: call build_index(paths) first, or pass index=<folder> "
                             "written by `multitask index`")
        task = self._head("retrieval")
        text = self.backbone.encode_text(self.backbone.tokenize([query]).to(self.device)).float()  # (1, D)
        sim = blockwise_similarity(task.head, text, index.frames.to(self.device), index.mask.to(self.device),
                                   self.block_size)[0].cpu()  # (N,)
        top = sim.topk(min(k, len(index.ids)))
        return [(index.ids[i], float(s)) for s, i in zip(top.values, top.indices)]

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        return self.backbone.encode_text(self.backbone.tokenize(texts).to(self.device)).float()  # (N, D)

    @torch.no_grad()
    def similarity(self, frames: torch.Tensor, frame_mask: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The (num_texts, num_videos) similarity evaluation computes, in eval mode with EMCL, all rows in one
        block. frames: (V, T, 3, H, W) CLIP-normalised; frame_mask: (V, T) of 0/1; texts: strings."""
        task = self._head("retrieval")
        task.eval()
        mask = frame_mask.to(self.device).long()
        video = self.backbone.encode_frames(frames.to(self.device).float(), mask).float()  # (V, T, D)
        return task.head(self._text_features(texts), video, mask).cpu()

    @torch.no_grad()
    def loss(self, frames: torch.Tensor, frame_mask: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The training loss of this batch (text i pairs with video i): train mode with dropout off and the
        EMCL mean as stored (its training-mode update is undone). No gradient: a check, not a training step."""
        if len(texts) != frames.shape[0]:
            raise ValueError(f"loss pairs text i with video i: got {len(texts)} texts for {frames.shape[0]} videos")
        task = self._head("retrieval")
        buffers = {name: b.clone() for name, b in task.named_buffers()}
        task.train()
        for module in task.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        try:
            batch = {"video": frames.to(self.device).float(), "video_mask": frame_mask.to(self.device).long(),
                     "text": list(texts)}
            return task(batch)["loss"].cpu()
        finally:
            task.eval()
            for name, b in task.named_buffers():
                b.copy_(buffers[name])

    @torch.no_grad()
    def caption(self, paths: list[str], batch_size: int = 16) -> list[str]:
        """One generated caption per video."""
        task = self._head("caption")
        feats = self.encode_frames(paths, batch_size)
        video = task.video_features(feats.frames.to(self.device), feats.mask.to(self.device), self.block_size)
        return task.generate(feats.frames.to(self.device), feats.mask.to(self.device), video, batch_size)

    @torch.no_grad()
    def answer(self, path: str, question: str, k: int = 1) -> str | list[str]:
        """The best answer (or the k best) to ``question`` about the video at ``path``."""
        task = self._head("qa")
        feats = self.encode_frames([path], progress=False)
        video = masked_mean(feats.frames, feats.mask).to(self.device)  # (1, D)
        text = self.backbone.encode_text(self.backbone.tokenize([question]).to(self.device)).float()  # (1, D)
        top = task.logits(video, text, self.block_size)[0].topk(min(k, len(task.answers))).indices
        answers = [task.answers[i] for i in top.tolist()]
        return answers[0] if k == 1 else answers


def load(checkpoint: str | Path, device: str | None = None, reference_compat: bool | None = None) -> Model:
    """Rebuild the task from a checkpoint folder (its config.yaml, tokenizer / answers, weights).
    ``reference_compat``: override ``model.reference_compat`` (the reference code's arithmetic)."""
    from tasks import from_checkpoint

    model_overrides = {} if reference_compat is None else {"reference_compat": bool(reference_compat)}
    task, conf = from_checkpoint(Path(checkpoint), model_overrides=model_overrides)
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Model(task, conf, Path(checkpoint).expanduser(), chosen)
