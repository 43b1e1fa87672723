"""Store the frozen image tower's outputs for every video of a run's data (see multitask/data/feature_cache.py).

    python scripts/cache_features.py OUT_DIR [the run's Hydra overrides]
    python scripts/cache_features.py /data/feats task=retrieval data=msrvtt data.root=/data/msrvtt model=vit_b32
    accelerate launch train.py task=retrieval data=msrvtt data.root=/data/msrvtt model=vit_b32 \\
        model.freeze_backbone=true data.feature_cache=/data/feats

Takes the same overrides as train.py, so the features match the run (model, weights, frames, image size).
Resumable: videos already in OUT_DIR are skipped; the manifest is rewritten every few batches.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from multitask.backbone import VideoTextBackbone, build_backbone  # noqa: E402
from multitask.data.feature_cache import save_features, tower_fingerprint  # noqa: E402
from multitask.data.frame_cache import MANIFEST, CacheItem, FrameCacheError, split_items, write_manifest  # noqa: E402
from multitask.decoding import DecoderSpec, process_decoder  # noqa: E402
from multitask.engine import prepare_data  # noqa: E402
from multitask.video import load_clip  # noqa: E402

SAVE_EVERY = 20  # batches between manifest rewrites


class Clips(Dataset):
    """Segment-centre clips of videos, as evaluation decodes them."""

    def __init__(self, items: list[CacheItem], num_frames: int, image_size: int, decoder: DecoderSpec) -> None:
        self.items, self.num_frames, self.image_size, self.decoder = items, num_frames, image_size, decoder

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        video, mask = load_clip(item.path, item.info, self.num_frames, self.image_size, max_seconds=item.max_seconds,
                                decoder=process_decoder(self.decoder))
        return {"index": index, "video": video, "video_mask": mask}  # (T, 3, S, S), (T,)


def run_items(conf: dict) -> list[CacheItem]:
    """Every video of the run's training and test sets (each head's for task=multi), once."""
    data = prepare_data(conf, show_progress=True)
    parts = data.parts.values() if data.parts else [data]
    items: dict[str, CacheItem] = {}
    for split in (split for part in parts for split in (part.train, part.test) if split is not None):
        for item in split_items(split):
            items.setdefault(item.video_id, item)
    return list(items.values())


def existing(out: Path, settings: dict) -> dict[str, dict]:
    """Videos already cached under ``out`` with these settings (resume); other settings are refused."""
    if not (out / MANIFEST).is_file():
        return {}
    manifest = json.loads((out / MANIFEST).read_text())
    videos = manifest.pop("videos")
    if manifest != settings:
        raise FrameCacheError(f"{out} holds features made with other settings ({manifest}); use another folder")
    return videos


@torch.no_grad()
def cache(backbone: VideoTextBackbone, clips: Clips, out: Path, settings: dict, videos: dict, conf: dict) -> None:
    device = next(backbone.parameters()).device
    loader = DataLoader(clips, batch_size=conf["eval"]["batch_size"], num_workers=conf["trainer"]["num_workers"])
    for n, batch in enumerate(tqdm(loader, desc="caching features"), 1):
        video = batch["video"].to(device)  # (B, T, 3, S, S)
        features = backbone.frame_outputs(video.flatten(0, 1)).view(*video.shape[:2], -1).cpu()  # (B, T, F)
        for index, feats, mask in zip(batch["index"].tolist(), features, batch["video_mask"]):
            item = clips.items[index]
            videos[item.video_id] = save_features(out, item.video_id, feats[: int(mask.sum())], item.max_seconds)
        if n % SAVE_EVERY == 0:
            write_manifest(out, videos=videos, **settings)
    write_manifest(out, videos=videos, **settings)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    out, overrides = Path(sys.argv[1]).expanduser(), sys.argv[2:]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        conf = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
    conf["data"]["feature_cache"] = None  # read the videos themselves
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone = build_backbone(conf["model"], conf["data"], chunks=1).eval().to(device)
    items = run_items(conf)
    size = conf["data"]["image_size"]
    settings = {"num_frames": conf["data"]["num_frames"], "image_size": size, "clip": conf["model"]["clip"],
                "fingerprint": tower_fingerprint(backbone),
                "features": int(backbone.frame_outputs(torch.zeros(1, 3, size, size, device=device)).shape[1])}
    out.mkdir(parents=True, exist_ok=True)
    videos = existing(out, settings)
    todo = [item for item in items if item.video_id not in videos]
    print(f"{len(videos)} videos already cached, {len(todo)} to do, {settings['features']} values per frame")
    decoder = DecoderSpec(conf["data"]["decoder"], conf["data"]["decode_timeout_s"])
    cache(backbone, Clips(todo, settings["num_frames"], size, decoder), out, settings, videos, conf)


if __name__ == "__main__":
    main()
