import pytest
import torch
from conftest import tiny_backbone
from safetensors.torch import save_file

from multitask.backbone import VideoTextBackbone, masked_mean, text_conditioned_pool
from multitask.pretrained import resolve_pretrained
from multitask.temporal import SpaceTimeTemporal, TransformerTemporal


def tiny(**kw) -> VideoTextBackbone:
    torch.manual_seed(0)
    return tiny_backbone(**kw)


@pytest.mark.parametrize("temporal", ["mean", "transformer", "spacetime"])
def test_video_and_text_shapes(temporal):
    model = tiny(temporal=temporal, temporal_layers=1, temporal_width=32)
    video, mask = torch.randn(2, 4, 3, 64, 64), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert model.encode_frames(video, mask).shape == (2, 4, 128)
    assert model.encode_video(video, mask).shape == (2, 128)
    assert model.encode_text(model.tokenize(["a red disc", "a blue box moves up"])).shape == (2, 128)


def test_spacetime_starts_as_mean_pooling_and_sees_padding_correctly():
    model = tiny(temporal="spacetime", temporal_layers=1, temporal_width=32)
    base = tiny(temporal="mean")
    base.load_state_dict(model.state_dict(), strict=False)
    video, mask = torch.randn(2, 4, 3, 64, 64), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert torch.allclose(model.encode_video(video, mask), base.encode_video(video, mask), atol=1e-5)
    assert isinstance(model.temporal, SpaceTimeTemporal)


@pytest.mark.parametrize("temporal", ["transformer", "spacetime"])
def test_padded_frames_do_not_change_the_video_feature(temporal):
    model = tiny(temporal=temporal, temporal_layers=1, temporal_width=8).eval()
    if temporal == "spacetime":
        torch.nn.init.normal_(model.temporal.proj_out.weight, std=0.1)  # leave the zero start
    video, mask = torch.randn(1, 4, 3, 64, 64), torch.tensor([[1, 1, 0, 0]])
    other = video.clone()
    other[:, 2:] = torch.randn(1, 2, 3, 64, 64)
    assert torch.allclose(model.encode_video(video, mask), model.encode_video(other, mask), atol=1e-5)


def test_transformer_initialised_from_first_text_blocks():
    model = tiny(temporal="transformer", temporal_layers=2)
    assert isinstance(model.temporal, TransformerTemporal)
    ours = model.temporal.transformer.resblocks[1].attn.in_proj_weight
    assert torch.equal(ours, model.clip.transformer.resblocks[1].attn.in_proj_weight)


def test_masked_mean_and_text_conditioned_pool():
    frames = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(masked_mean(frames, mask), torch.tensor([[2.0, 0.0]]))
    text = torch.tensor([[0.0, 0.0]])  # equal weights over real frames
    assert torch.allclose(text_conditioned_pool(text, frames, mask), torch.tensor([[[2.0, 0.0]]]))
    text = torch.tensor([[3.0, 0.0]])  # weights softmax([1, 3]) over the two real frames
    w = torch.softmax(torch.tensor([1.0, 3.0]), 0)
    assert torch.allclose(text_conditioned_pool(text, frames, mask)[0, 0, 0], w[0] * 1 + w[1] * 3)


def test_pretrained_from_file_path(tmp_path):
    source = tiny()
    for p in source.clip.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.clip.state_dict().items()}, str(path))
    torch.save(source.clip.state_dict(), tmp_path / "weights.pt")
    for file in (path, tmp_path / "weights.pt"):
        loaded = tiny_backbone(pretrained=str(file))
        for (name, a), b in zip(source.clip.state_dict().items(), loaded.clip.state_dict().values()):
            assert torch.equal(a, b), name


def test_pretrained_tag_resolves_from_local_hf_cache(tmp_path, monkeypatch):
    import open_clip

    repo, name = "example/tiny-clip", "open_clip_model.safetensors"
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda model, tag: {"hf_hub": f"{repo}/"} if tag == "mine" else {})
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / name).write_bytes(b"x")
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("abc123")
    assert resolve_pretrained("emcl-tiny", "mine", cache_dir=str(tmp_path)) == snapshot / name
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_pretrained("emcl-tiny", "mine", cache_dir=str(tmp_path / "empty"))


def test_unknown_names_list_known_ones():
    with pytest.raises(ValueError, match="known: mean, transformer, transformer_projected, spacetime"):
        tiny(temporal="lstm")
    with pytest.raises(ValueError, match="known: mean, text_conditioned"):
        tiny(pooling="max")
    with pytest.raises(ValueError, match="open_clip knows"):
        tiny_backbone(clip="ViT-Z-99")
    with pytest.raises(FileNotFoundError, match="neither a file nor an open_clip tag"):
        tiny(pretrained="/no/such/file.pt")


def test_spacetime_readout_checks_its_grid():
    model = tiny(temporal="spacetime", temporal_width=8)
    with pytest.raises(ValueError, match="built for 4 frames x 16 patches"):
        model.encode_frames(torch.randn(1, 6, 3, 64, 64), torch.ones(1, 6, dtype=torch.long))
