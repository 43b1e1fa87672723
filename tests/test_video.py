import numpy as np
import torch

from multitask.video import CLIP_MEAN, CLIP_STD, VideoInfo, load_clip, pad_frames, probe_video, sample_indices


def test_sample_indices_centres_and_random_segments():
    assert sample_indices(12, 4).tolist() == [1, 4, 7, 10]  # segments [0,3) [3,6) [6,9) [9,12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = sample_indices(12, 4, rng)
        assert all(3 * k <= i < 3 * (k + 1) for k, i in enumerate(idx))
    assert sample_indices(3, 8).tolist() == [0, 1, 2]  # short clip: every frame, caller pads


def test_pad_frames_mask():
    clip, mask = pad_frames(torch.ones(3, 3, 4, 4), 5)
    assert clip.shape == (5, 3, 4, 4) and mask.tolist() == [1, 1, 1, 0, 0]
    assert clip[3:].abs().sum() == 0


def test_load_clip_shapes_and_normalisation(tiny_root):
    path = str(tiny_root / "videos" / "all" / "video0.mp4")
    info = probe_video(path)
    assert isinstance(info, VideoInfo) and info.height == info.width == 64
    clip, mask = load_clip(path, info, 16, 32)
    assert clip.shape == (16, 3, 32, 32)
    assert mask.sum().item() == min(16, info.num_frames)
    real = clip[: int(mask.sum())]
    low = (0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    high = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert (real.amin(dim=(0, 2, 3)) >= low - 1e-4).all() and (real.amax(dim=(0, 2, 3)) <= high + 1e-4).all()
    again, _ = load_clip(path, info, 16, 32)
    assert torch.equal(clip, again)


def test_probe_reports_missing_empty_and_truncated(tmp_path, tiny_root):
    assert probe_video(tmp_path / "nope.mp4") == "missing"
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert probe_video(tmp_path / "empty.mp4") == "empty file"
    data = (tiny_root / "videos" / "all" / "video1.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    assert str(probe_video(tmp_path / "cut.mp4")).startswith("undecodable")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    assert str(probe_video(tmp_path / "junk.mp4")).startswith("undecodable")
