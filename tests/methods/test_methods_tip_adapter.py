"""Tip-Adapter and Tip-Adapter-F against a re-typed oracle of CLIPCalib's code (trainers/adapters.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from calprompt.calibration import build_objective
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.methods import build_method
from calprompt.methods.tip_adapter import cache_logits
from tests.synthetic import synthetic_splits, synthetic_training_data


def clipcalib_forward_tipadapter(features, prototypes, cache_keys, cache_values, logit_scale, alpha, beta):
    """Re-typed from CustomCLIP.forward_tipadapter of CLIPCalib (its ``logit_scale`` is already ``exp``-ed here)."""
    image_features_norm = features / features.norm(dim=-1, keepdim=True)
    prototypes_norm = prototypes / prototypes.norm(dim=-1, keepdim=True)
    logits = image_features_norm @ prototypes_norm.t() * logit_scale
    cache_keys = cache_keys / cache_keys.norm(dim=-1, keepdim=True)
    affinity = features @ cache_keys.t()
    cache_logits = torch.exp((-1) * (beta - beta * affinity)) @ cache_values
    logits += alpha * cache_logits
    return logits


def _random(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (3.5, 5.5), (0.0, 2.0)])
def test_cache_logits_equal_the_public_form_on_unit_features(alpha, beta):
    """float64; CLIPCalib multiplies the raw feature by the keys, so the forms agree on unit-norm features."""
    features = F.normalize(_random(7, 16, seed=1), dim=-1)
    prototypes, keys = _random(5, 16, seed=2), _random(20, 16, seed=3)
    values = F.one_hot(torch.arange(20) % 5, 5).double()
    expected = clipcalib_forward_tipadapter(features, prototypes, keys, values, 100.0, alpha, beta)
    ours = 100.0 * features @ F.normalize(prototypes, dim=-1).t() + alpha * cache_logits(features, keys, values, beta)
    assert (ours - expected).abs().max().item() <= 1e-12 * expected.abs().max().item()


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_training_start_builds_the_cache_and_the_logits_are_the_public_ones(tiny_backbone, name):
    splits = synthetic_splits()
    data = synthetic_training_data(tiny_backbone, splits)
    method = build_method(name, tiny_backbone, splits.classnames, alpha=2.0, beta=3.0)
    image = F.normalize(torch.randn(5, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    prototypes = zero_shot_text_features(tiny_backbone, splits.classnames, "a photo of a {}.", normalize=False)
    scale = tiny_backbone.logit_scale
    with torch.no_grad():
        zero_shot = scale * image @ F.normalize(prototypes, dim=-1).t()
        torch.testing.assert_close(method(image_features=image).logits, zero_shot)  # no cache yet: zero-shot CLIP

    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, seed=3)
    Trainer(method, build_objective("none"), data, config).begin()
    keys = data.frozen_features(0, config)  # the first epoch's views, from the loop's feature cache
    values = F.one_hot(data.labels, len(splits.classnames)).float()
    assert torch.equal(method.cache_keys, keys) and torch.equal(method.cache_values, values)
    expected = clipcalib_forward_tipadapter(image, prototypes, keys, values, scale, 2.0, 3.0)
    with torch.no_grad():
        torch.testing.assert_close(method(image_features=image).logits, expected, rtol=1e-5, atol=1e-5)


def test_training_free_tip_adapter_runs_through_the_loop_without_steps(tiny_backbone, tmp_path):
    splits = synthetic_splits()
    method = build_method("tip_adapter", tiny_backbone, splits.classnames)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05, seed=3)
    data = synthetic_training_data(tiny_backbone, splits)
    result = Trainer(method, build_objective("ours"), data, config, checkpoint_dir=tmp_path).fit()
    assert result.history == [] and not any(tmp_path.iterdir())  # nothing optimised, nothing checkpointed
    assert method.num_trainable_parameters() == 0
    assert torch.equal(method.cache_keys, data.frozen_features(0, config))


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_the_cache_is_saved_and_restored_with_the_weights(tiny_backbone, name):
    splits = synthetic_splits()
    method = build_method(name, tiny_backbone, splits.classnames)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, seed=3)
    Trainer(method, build_objective("none"), synthetic_training_data(tiny_backbone, splits), config).begin()
    state = method.trainable_state_dict()
    assert set(state) == {"cache_keys", "cache_values"} and state["cache_keys"].shape == (24, tiny_backbone.embed_dim)
    fresh = build_method(name, tiny_backbone, splits.classnames)
    assert fresh.trainable_state_dict() == {}
    fresh.load_trainable_state_dict(state)
    image = F.normalize(torch.randn(3, tiny_backbone.embed_dim), dim=-1)
    with torch.no_grad():
        assert torch.equal(fresh(image_features=image).logits, method(image_features=image).logits)
    with pytest.raises(ValueError, match=r"Tip-Adapter weights.*cache_keys"):
        fresh.load_trainable_state_dict({"cache_keys": state["cache_keys"]})
    with pytest.raises(ValueError, match=r"cache values.*of shape \(24, 4\)"):
        fresh.load_trainable_state_dict({**state, "cache_values": state["cache_values"][:, :3]})


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_a_tip_adapter_cannot_name_other_classes(tiny_backbone, name):
    splits = synthetic_splits(num_classes=6)
    method = build_method(name, tiny_backbone, splits.classnames[:4])
    assert method.class_specific
    with pytest.raises(ValueError, match="protocol: all"):
        method.set_classnames(splits.classnames[4:])


def test_tip_adapter_vitb16_parameter_counts(vitb16_backbone):
    """Tip-Adapter learns nothing; Tip-Adapter-F learns the keys, N = shots x classes rows of 512 on ViT-B/16
    (16 shots of 10 classes here: 160 x 512; ImageNet: 16 000 x 512 = 8 192 000)."""
    names = [f"class {i}" for i in range(10)]
    features = torch.randn(160, vitb16_backbone.embed_dim)
    labels = torch.arange(160) % 10
    counts = {}
    for name in ("tip_adapter", "tip_adapter_f"):
        method = build_method(name, vitb16_backbone, names)
        method.on_fit_start(lambda: features, labels)
        counts[name] = method.num_trainable_parameters()
    assert counts == {"tip_adapter": 0, "tip_adapter_f": 160 * 512}
