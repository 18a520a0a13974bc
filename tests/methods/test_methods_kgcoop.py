"""KgCoOp's knowledge-guided term: zero (with zero gradient) where the prompts equal the teacher, positive after."""

from __future__ import annotations

import torch

from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.methods import build_method
from calprompt.methods.kgcoop import knowledge_guidance

NAMES = ["dog", "golden retriever", "sea or lake", "x"]


def _term(method, teacher):
    text = torch.nn.functional.normalize(method.encode_text(), dim=-1)
    inputs = {"text_features": text, "zs_text_features": teacher}
    weight, value = method.losses(inputs)["kg"]
    return weight, value


def test_term_is_zero_with_zero_gradient_at_init_and_positive_after_perturbation(tiny_backbone):
    method = build_method("kgcoop", tiny_backbone, NAMES)  # ctx from "a photo of a"
    teacher = zero_shot_text_features(tiny_backbone, NAMES, "a photo of a {}.")
    weight, value = _term(method, teacher)
    assert weight == 8.0
    # cos of two float32 unit vectors that agree to rounding: 1 - cos is a few ulps of 1.
    assert abs(value.item()) <= 1e-6
    (grad,) = torch.autograd.grad(value, method.ctx)
    # d(1 - cos)/dt vanishes at t = t0; what is left is rounding of the ~1e-7 mismatch through the encoder.
    assert grad.abs().max().item() <= 1e-5
    with torch.no_grad():
        method.ctx.add_(0.05 * torch.randn(method.ctx.shape, generator=torch.Generator().manual_seed(1)))
    _, value = _term(method, teacher)
    assert value.item() > 1e-4
    (grad,) = torch.autograd.grad(value, method.ctx)
    assert grad.abs().max().item() > 1e-4


def test_term_matches_its_definition():
    tuned = torch.nn.functional.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    teacher = torch.nn.functional.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    expected = 1 - torch.nn.functional.cosine_similarity(tuned, teacher, dim=-1).mean()
    torch.testing.assert_close(knowledge_guidance(tuned, teacher), expected)


def test_own_teacher_template_is_computed_once_per_class_list(tiny_backbone):
    method = build_method("kgcoop", tiny_backbone, NAMES, teacher_template="a photo of a {}, a type of texture.")
    assert method.needs == {"text_features"}
    expected = zero_shot_text_features(tiny_backbone, NAMES, "a photo of a {}, a type of texture.")
    assert torch.equal(method.teacher_text, expected)
    method.set_classnames(NAMES[:2])
    assert method.teacher_text.shape[0] == 2
    assert build_method("kgcoop", tiny_backbone, NAMES).needs == {"text_features", "zs_text_features"}
