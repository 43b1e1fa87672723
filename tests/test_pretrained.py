"""CLIP weights run as they were trained: QuickGELU from the weights, text positions kept, not interpolated."""
import logging

import open_clip
import pytest
import torch
from conftest import tiny_backbone
from open_clip.transformer import QuickGELU

from multitask.backbone import VideoTextBackbone
from multitask.pretrained import weights_quick_gelu


def _source(clip: str, quick_gelu: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = open_clip.create_model(clip, quick_gelu=quick_gelu, force_context_length=77).eval()
    with torch.no_grad():  # weights far enough from init that the activation shows in the features
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _features(model: torch.nn.Module, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=model.context_length)(["a dog runs", "a red car"])
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def _load(path, clip: str, **kw) -> VideoTextBackbone:
    size = 224 if clip == "ViT-B-32" else 64
    return tiny_backbone(clip=clip, pretrained=str(path), max_words=77, num_frames=2, image_size=size, **kw).eval()


def _assert_same_features(source, loaded, size: int, atol: float = 1e-5) -> None:
    for ours, theirs in zip(_features(loaded.clip, size), _features(source, size)):
        assert (ours - theirs).abs().max() < atol


def _assert_other_features(source, loaded, size: int) -> None:
    image = (_features(loaded.clip, size)[0] - _features(source, size)[0]).abs().max()
    assert image > 1e-4, float(image)


def test_openai_layout_state_dict_runs_with_quickgelu(tmp_path, caplog):
    source = _source("ViT-B-32", quick_gelu=True)
    path = tmp_path / "ViT-B-32-openai-layout.pt"
    torch.save(source.state_dict(), path)  # plain state dict in OpenAI's layout, no marker
    loaded = _load(path, "ViT-B-32")
    assert loaded.quick_gelu and isinstance(loaded.clip.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    _assert_same_features(source, loaded, 224)
    with caplog.at_level(logging.WARNING):
        gelu = _load(path, "ViT-B-32", quick_gelu=False)
    assert "trained with QuickGELU" in caplog.text
    _assert_other_features(source, gelu, 224)


def test_openai_metadata_marks_quickgelu_weights_of_any_architecture(tmp_path):
    source = _source("emcl-tiny", quick_gelu=True)
    state = {**source.state_dict(), "input_resolution": torch.tensor(64), "context_length": torch.tensor(77),
             "vocab_size": torch.tensor(49408)}  # what OpenAI's own state dicts carry
    torch.save(state, tmp_path / "tiny.pt")
    _assert_same_features(source, _load(tmp_path / "tiny.pt", "emcl-tiny"), 64)
    torch.save(source.state_dict(), tmp_path / "unmarked.pt")  # no OpenAI release of this architecture: its own GELU
    unmarked = _load(tmp_path / "unmarked.pt", "emcl-tiny")
    assert not unmarked.quick_gelu
    _assert_other_features(source, unmarked, 64)


def test_gelu_trained_weights_stay_gelu_and_tags_say_what_they_were_trained_with(tmp_path):
    source = _source("emcl-tiny", quick_gelu=False)
    torch.save(source.state_dict(), tmp_path / "gelu.pt")
    _assert_same_features(source, _load(tmp_path / "gelu.pt", "emcl-tiny"), 64)
    assert weights_quick_gelu("ViT-B-32", "openai", tmp_path / "absent", {}, reference=False) is True
    assert weights_quick_gelu("ViT-B-32", "laion2b_s34b_b79k", tmp_path / "absent", {}, reference=False) is False


def test_text_positions_are_kept_not_interpolated(tmp_path):
    source = _source("emcl-tiny", quick_gelu=False)  # 77 text positions
    torch.save(source.state_dict(), tmp_path / "w.pt")
    short = tiny_backbone(pretrained=str(tmp_path / "w.pt"), max_words=32, num_frames=2, temporal="transformer",
                          temporal_layers=2)
    assert torch.equal(short.clip.positional_embedding, source.positional_embedding[:32])
    tokens = short.tokenize(["a dog runs on the beach"])
    with torch.no_grad():  # a short caption's feature does not depend on the context length
        assert torch.allclose(short.clip.encode_text(tokens), source.encode_text(
            open_clip.get_tokenizer("emcl-tiny", context_length=77)(["a dog runs on the beach"])), atol=1e-5)
    # the frame transformer starts from all 77 pretrained rows, not only the 32 the text tower keeps
    assert torch.equal(short.temporal.frame_position.weight[:77], source.positional_embedding)
    with pytest.raises(ValueError, match="has 77 text positions; data.max_words=78"):
        tiny_backbone(pretrained=str(tmp_path / "w.pt"), max_words=78, num_frames=2)


def test_temporal_transformer_uses_the_text_towers_activation():
    for quick in (True, False):
        model = tiny_backbone(num_frames=2, temporal="transformer", temporal_layers=1, quick_gelu=quick)
        act = model.temporal.transformer.resblocks[0].mlp.gelu
        assert isinstance(act, QuickGELU) == quick
        assert isinstance(model.clip.transformer.resblocks[0].mlp.gelu, QuickGELU) == quick
