"""Pictures of a run: loss and metric curves, and video/text features before and after EMCL.

    python scripts/plot_run.py outputs/retrieval/default                 # curves + projection
    python scripts/plot_run.py RUN_DIR --videos 5 --checkpoint CKPT      # choose the checkpoint / how many videos

Writes ``RUN_DIR/plots/curves.png`` (every ``*_loss`` term and ``eval/*`` metric from metrics.jsonl) and
``RUN_DIR/plots/emcl_projection.png``: a 2-D PCA of a few test videos and all their captions, from the
checkpoint's encoders, before and after EMCL (the paper's figure 1, with PCA instead of t-SNE so that
the two panels share one deterministic projection method). The projection needs the run's data.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def plot_curves(run: Path, out: Path) -> Path:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = sorted({k for r in records for k in r if k == "loss" or k.endswith("_loss")})
    evals = sorted({k for r in records for k in r if k.startswith("eval/")})
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(12 if evals else 6, 4), squeeze=False)
    for key in losses:
        points = [(r["step"], r[key]) for r in records if key in r]
        axes[0, 0].plot(*zip(*points), label=key)
    axes[0, 0].set(xlabel="step", ylabel="loss (mean over the log window)", title=f"{run.name}: training losses")
    axes[0, 0].legend(fontsize=8)
    for key in evals:
        points = [(r["step"], r[key]) for r in records if key in r]
        axes[0, 1].plot(*zip(*points), marker="o", label=key.removeprefix("eval/"))
    if evals:
        axes[0, 1].set(xlabel="step", title="periodic evaluation (trainer.eval_every)")
        axes[0, 1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    return out / "curves.png"


def pca_2d(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T  # (N, 2)


@torch.no_grad()
def projection_features(checkpoint: Path, num_videos: int) -> tuple[torch.Tensor, torch.Tensor, list[int], object]:
    """(videos (V, D), captions (C, D), owner video of each caption, the model's EMCL or None)."""
    import multitask
    from multitask.data.registry import TABLES, build_data, layout_of
    from multitask.emcl import EMCL

    model = multitask.load(checkpoint)
    layout = TABLES[layout_of(model.conf["data"])]
    split = "caption" if "caption" in layout else "retrieval"  # MSR-VTT's caption test has every caption
    data = build_data(split, model.conf["data"], show_progress=False).test
    rows = data.rows.select(range(min(num_videos, len(data))))
    paths = [data.path_of(v) for v in rows["video_id"]]
    videos = model.embed_videos(paths)
    captions = [c for group in rows["captions"] for c in group]
    owners = [i for i, group in enumerate(rows["captions"]) for _ in group]
    emcl = next((m for m in model.task.modules() if isinstance(m, EMCL)), None)
    return videos, model.embed_texts(captions), owners, emcl


def plot_projection(checkpoint: Path, out: Path, num_videos: int) -> Path:
    videos, texts, owners, emcl = projection_features(checkpoint, num_videos)
    stacked = torch.cat([videos, texts])  # (V + C, D)
    panels = [("before EMCL", stacked)]
    if emcl is not None:
        panels.append(("after EMCL (learned mean)", F.normalize(emcl.eval()(stacked), dim=-1)))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (title, feats) in zip(axes[0], panels):
        xy = pca_2d(feats.numpy())
        v = len(videos)
        for i in range(v):
            mine = [v + j for j, owner in enumerate(owners) if owner == i]
            ax.scatter(xy[mine, 0], xy[mine, 1], color=colours(i % 10), marker="o", s=25, alpha=0.7)
            ax.scatter(xy[i, 0], xy[i, 1], color=colours(i % 10), marker="*", s=260, edgecolor="black")
        ax.set(title=f"{title}: stars = videos, dots = their captions", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(out / "emcl_projection.png", dpi=120)
    plt.close(fig)
    return out / "emcl_projection.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run directory (output_dir)")
    parser.add_argument("--checkpoint", type=Path, help="default: RUN/checkpoints/last")
    parser.add_argument("--videos", type=int, default=4, help="test videos in the projection")
    parser.add_argument("--no-projection", action="store_true", help="only the curves")
    args = parser.parse_args()
    out = args.run / "plots"
    out.mkdir(exist_ok=True)
    print(plot_curves(args.run, out))
    if not args.no_projection:
        print(plot_projection(args.checkpoint or args.run / "checkpoints" / "last", out, args.videos))


if __name__ == "__main__":
    main()
