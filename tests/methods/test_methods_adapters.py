"""The adapters on frozen features (CLIP-Adapter, ZS-LP, CLAP, TaskRes): parameter counts on ViT-B/16 against the
public code's arithmetic, and each distinctive computation against a re-typed oracle of the public code
(Bala93/CLIPCalib `trainers/adapters.py`; ml-stat-Sustech/CLIP_Calibration `trainers/classification/`) on the same
tensors, in float64 where the arithmetic allows."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from calprompt.calibration import build_objective
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.methods import build_method
from calprompt.methods.clap import class_adaptive_constraint, class_multipliers
from tests.synthetic import synthetic_splits, synthetic_training_data

NAMES = ["dog", "golden retriever", "Apply_Eye_Makeup"]


def test_vitb16_parameter_counts(vitb16_backbone):
    """CLIP-Adapter: Linear(512 -> 128) and Linear(128 -> 512), no biases; the class-specific ones: C x 512."""
    assert build_method("clip_adapter", vitb16_backbone, NAMES).num_trainable_parameters() == 2 * 512 * 128 == 131_072
    for name in ("zslp", "taskres"):  # CLAP is ZS-LP's probe (its multipliers are state, not parameters)
        method = build_method(name, vitb16_backbone, NAMES)
        assert method.num_trainable_parameters() == len(NAMES) * 512 == 1_536, name  # ImageNet: 1000 x 512


def _raw_text(tiny_clip, names, template="a photo of a {}.") -> torch.Tensor:
    """Frozen CLIP's raw (unnormalised) class text features from open_clip itself (the public code's prototypes)."""
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # CLIP's BPE vocabulary, as the tiny model's
    prompts = [template.format(name.replace("_", " ")) for name in names]
    with torch.no_grad():
        return tiny_clip.encode_text(tokenizer(prompts)).double()


def _logits(scale: float, image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The public forward: ``exp(logit_scale) * norm(image) @ norm(weights).T``."""
    image = image / image.norm(dim=-1, keepdim=True)
    weights = weights / weights.norm(dim=-1, keepdim=True)
    return scale * image @ weights.t()


def _features(n: int = 5, dim: int = 32) -> torch.Tensor:
    return 3.0 * torch.randn(n, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_zslp_starts_at_the_raw_zero_shot_weights_and_taskres_at_zero(tiny_backbone, tiny_clip):
    raw = _raw_text(tiny_clip, NAMES)
    zslp = build_method("zslp", tiny_backbone, NAMES)
    # Our encoder truncates prompts after their end token (exact in arithmetic, float32 sums in another order).
    torch.testing.assert_close(zslp.prototypes.detach().double(), raw, rtol=1e-5, atol=1e-5)
    taskres = build_method("taskres", tiny_backbone, NAMES)
    assert torch.equal(taskres.residuals, torch.zeros_like(raw, dtype=torch.float32))
    assert torch.equal(taskres.encode_text(), zslp.prototypes.detach())


def test_ensembled_start_is_the_mean_of_the_raw_features(tiny_backbone, tiny_clip):
    """ImageNet's recipe: the mean over templates of the raw features (TaskRes's `_get_base_text_features`)."""
    extra = ("itap of a {}.", "art of the {}.")
    method = build_method("zslp", tiny_backbone, NAMES, extra_templates=extra)
    expected = torch.stack([_raw_text(tiny_clip, NAMES, t) for t in ("a photo of a {}.", *extra)]).mean(0)
    torch.testing.assert_close(method.prototypes.detach().double(), expected, rtol=1e-5, atol=1e-5)


def test_taskres_residual_equals_the_public_forward(tiny_backbone):
    method = build_method("taskres", tiny_backbone, NAMES, alpha=0.5)
    with torch.no_grad():
        method.residuals.normal_(generator=torch.Generator().manual_seed(2))
    base, residuals = method.base_text.double(), method.residuals.detach().double()
    scale = float(tiny_backbone.logit_scale)
    image = _features()
    expected = _logits(scale, image, base + 0.5 * residuals)  # TaskResLearner.forward: t + alpha * x
    ours = method(image_features=image.float()).logits.double()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5 * scale)


def test_clip_adapter_blend_equals_the_public_forward_on_raw_features(tiny_backbone):
    """The public code blends on raw features; ours on normalised ones: equal after normalisation (homogeneity)."""
    torch.manual_seed(0)
    method = build_method("clip_adapter", tiny_backbone, NAMES, ratio=0.2)
    method.adapter.double()
    w1, w2 = (layer.weight.detach() for layer in (method.adapter[0], method.adapter[2]))
    image = _features()  # raw, norm about 17
    x = torch.relu(torch.relu(image @ w1.t()) @ w2.t())  # Adapter.fc
    blended = 0.2 * x + (1 - 0.2) * image  # ratio * x + (1 - ratio) * image_features
    text = F.normalize(method.text_features.double(), dim=-1)  # unit in float64, as the oracle makes it
    scale = float(tiny_backbone.logit_scale)
    ours = method.logits(method.image_head(F.normalize(image, dim=-1)), text)
    torch.testing.assert_close(ours, _logits(scale, blended, text), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ours, _logits(scale, image, text))  # the adapter changes the logits


def test_clip_adapter_text_is_frozen_zero_shot_and_can_name_novel_classes(tiny_backbone, tiny_clip):
    method = build_method("clip_adapter", tiny_backbone, NAMES)
    torch.testing.assert_close(
        method.text_features.double(), F.normalize(_raw_text(tiny_clip, NAMES), dim=-1), rtol=1e-5, atol=1e-6
    )
    method.set_classnames(["cat", "car"])
    assert method.text_features.shape == (2, tiny_backbone.embed_dim) and not method.class_specific


def _public_multipliers(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AdapterMethod.init_lagrangian_multipliers, constraint "l2" (re-typed)."""
    one_hot = F.one_hot(labels).to(logits.dtype)
    return torch.diag(torch.softmax(logits, -1).t() @ one_hot) / one_hot.sum(0)


def test_clap_multipliers_and_constraint_equal_the_public_code():
    generator = torch.Generator().manual_seed(3)
    logits = 10 * torch.randn(40, 5, generator=generator, dtype=torch.float64)
    labels = torch.cat([torch.arange(5), torch.randint(0, 5, (35,), generator=generator)])
    multipliers = class_multipliers(logits, labels)
    torch.testing.assert_close(multipliers, _public_multipliers(logits, labels), rtol=1e-12, atol=1e-15)
    weights, start = torch.randn(2, 5, 8, generator=generator, dtype=torch.float64)
    public = torch.mean(multipliers * (weights - start).pow(2).sum(-1))  # zero_shot_constraint, "l2"
    torch.testing.assert_close(class_adaptive_constraint(weights, start, multipliers), public, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="every class"):
        class_multipliers(logits[:4], labels[:4].clamp(max=3))


def test_clap_sets_its_multipliers_from_the_zero_shot_predictions_of_the_training_views(tiny_backbone):
    """Before the first epoch, from frozen CLIP's features of the first epoch's views and the initial weights; the
    term is 0 at the start (w = t) and its gradient then pulls w back."""
    splits = synthetic_splits()
    data = synthetic_training_data(tiny_backbone, splits)
    torch.manual_seed(0)
    method = build_method("clap", tiny_backbone, splits.classnames)
    start = method.prototypes.detach().double().clone()
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, seed=3)
    Trainer(method, build_objective("none"), data, config).fit()
    features = data.frozen_features(0, config).double()
    zs_logits = _logits(float(tiny_backbone.logit_scale), features, start)
    expected = _public_multipliers(zs_logits, data.labels)
    torch.testing.assert_close(method.extra_state()["multipliers"].double(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(method.prototypes.detach().double(), start)
    with torch.no_grad():
        method.prototypes.copy_(start)
    assert float(method.losses({})["clap_constraint"][1].detach()) == 0.0
