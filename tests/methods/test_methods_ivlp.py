"""IVLP: parameter count, exact equivalence with CoOp when reduced to text depth 1, and the cached-features switch."""

from __future__ import annotations

import pytest
import torch

from calprompt.calibration import build_objective
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.methods import build_method
from tests.synthetic import synthetic_splits, synthetic_training_data

NAMES = ["dog", "golden retriever", "sea or lake"]


def _images(backbone, n=3):
    size = backbone.preprocess.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_vitb16_parameter_count(vitb16_backbone):
    method = build_method("ivlp", vitb16_backbone, NAMES)  # 2 + 2 tokens, depth 12
    assert method.num_trainable_parameters() == 12 * 2 * 512 + 12 * 2 * 768 == 30_720


@pytest.mark.parametrize("backbone_name", ["tiny_backbone", "vitb16_backbone"])
def test_text_depth_one_without_vision_prompts_is_coop(backbone_name, request):
    backbone = request.getfixturevalue(backbone_name)
    ivlp = build_method("ivlp", backbone, NAMES, n_ctx_text=4, text_depth=1, n_ctx_vision=0)
    coop = build_method("coop", backbone, NAMES)
    assert ivlp.image_encoder_untouched and ivlp.num_trainable_parameters() == coop.num_trainable_parameters()
    images = _images(backbone)
    with torch.no_grad():
        difference = (ivlp(images).logits - coop(images).logits).abs().max().item()
    assert difference <= 1e-5


def test_learned_context_is_the_head_of_the_phrase(tiny_backbone):
    """2 tokens from "a photo of a": "a photo" is learned, "of a" stays fixed, the sentence is the zero-shot one."""
    method = build_method("ivlp", tiny_backbone, NAMES, text_depth=1, n_ctx_vision=0)
    ids = tiny_backbone.tokenize([f"a photo of a {name}." for name in NAMES])
    expected = tiny_backbone.model.encode_text(ids)  # open_clip's own encoder
    with torch.no_grad():
        assert (method.encode_text() - expected).abs().max().item() <= 1e-5
    assert method.text.ctx.shape == (2, tiny_backbone.text_width)


def test_vision_prompts_follow_the_config(tiny_backbone):
    with_vision = build_method("ivlp", tiny_backbone, NAMES)
    without = build_method("ivlp", tiny_backbone, NAMES, n_ctx_vision=0)
    assert not with_vision.image_encoder_untouched and without.image_encoder_untouched
    assert "vision.shallow" in with_vision.trainable_parameters()
    assert not any(name.startswith("vision") for name in without.trainable_parameters())
    images = _images(tiny_backbone)
    with torch.no_grad():
        frozen = tiny_backbone.encode_image(images)
        assert torch.equal(without.encode_image(images), frozen)
        assert not torch.allclose(with_vision.encode_image(images), frozen, atol=1e-3)


def test_depths_are_checked_against_the_backbone(tiny_backbone):
    text_layers, vision_layers = tiny_backbone.text_layers, tiny_backbone.vision_layers
    method = build_method("ivlp", tiny_backbone, NAMES)  # paper depth 12, capped at the tiny encoders' layers
    assert len(method.text.deep) == text_layers - 1 and len(method.vision.deep) == vision_layers - 1
    with pytest.raises(ValueError, match="text_depth"):
        build_method("ivlp", tiny_backbone, NAMES, text_depth=text_layers + 1)
    with pytest.raises(ValueError, match="vision_depth"):
        build_method("ivlp", tiny_backbone, NAMES, vision_depth=0)
    with pytest.raises(ValueError, match="n_ctx_text"):
        build_method("ivlp", tiny_backbone, NAMES, n_ctx_text=5)  # "a photo of a" has 4 tokens
    with pytest.raises(ValueError, match="n_ctx_vision"):
        build_method("ivlp", tiny_backbone, NAMES, n_ctx_vision=-1)


def test_without_vision_prompts_training_uses_cached_features(tiny_backbone):
    splits = synthetic_splits()
    data = synthetic_training_data(tiny_backbone, splits)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.01, seed=1)
    for n_ctx_vision, cached in ((0, True), (2, False)):
        method = build_method("ivlp", tiny_backbone, splits.classnames, n_ctx_vision=n_ctx_vision)
        assert Trainer(method, build_objective("ours"), data, config).fit().used_feature_cache is cached
