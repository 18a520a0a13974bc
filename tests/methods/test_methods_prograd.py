"""ProGrad: the projection rule on constructed gradients, the student's initial context, the update in the loop."""

from __future__ import annotations

import torch

from calprompt.methods import build_method
from calprompt.methods.prograd import distillation_loss, project_conflicting
from calprompt.methods.text_prompts import context_from_phrase

NAMES = ["dog", "golden retriever", "sea or lake", "x"]


def _vectors(*rows):
    return [torch.tensor(r, dtype=torch.float64) for r in rows]


def test_conflicting_gradient_is_made_orthogonal_to_the_general_direction():
    g, g_kl = _vectors([1.0, -2.0, 0.5], [-1.0, 1.0, 0.0])
    assert (g @ g_kl) < 0
    projected = project_conflicting(g, g_kl, 1.0)
    assert abs((projected @ g_kl).item()) <= 1e-15
    expected = g - (g @ g_kl) / (g_kl @ g_kl) * g_kl
    torch.testing.assert_close(projected, expected)
    half = project_conflicting(g, g_kl, 0.5)  # lambda = 0.5 removes half of the conflicting component
    torch.testing.assert_close(half @ g_kl, 0.5 * (g @ g_kl))


def test_aligned_or_zero_general_gradient_leaves_it_unchanged():
    g, aligned, zero = _vectors([1.0, -2.0, 0.5], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0])
    assert torch.equal(project_conflicting(g, aligned), g)
    result = project_conflicting(g, zero)
    assert torch.equal(result, g) and torch.isfinite(result).all()
    matrix = torch.randn(3, 4)
    assert torch.equal(project_conflicting(matrix, -matrix * 0), matrix)


def test_projection_is_per_parameter_tensor_in_the_update(tiny_backbone):
    """A step's gradient equals project_conflicting(grad CE, grad KL) computed by hand."""
    torch.manual_seed(0)
    method = build_method("prograd", tiny_backbone, NAMES)
    features = torch.nn.functional.normalize(torch.randn(6, tiny_backbone.embed_dim), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    teacher = torch.randn(6, len(NAMES)) * 5

    def losses():
        logits = method(image_features=features).logits
        ce = torch.nn.functional.cross_entropy(logits, labels)
        return ce, method.losses({"logits": logits, "zs_logits": teacher})

    ce, terms = losses()
    assert terms["kl"][0] == 0.0  # logged, not added to the loss
    method.backward(ce, terms, lambda value: value)
    (g,) = torch.autograd.grad(losses()[0], method.ctx)
    (g_kl,) = torch.autograd.grad(losses()[1]["kl"][1], method.ctx)
    torch.testing.assert_close(method.ctx.grad, project_conflicting(g, g_kl), rtol=1e-5, atol=1e-8)


def test_distillation_loss_is_the_kl_up_to_the_teacher_entropy():
    logits, teacher = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    p = teacher.softmax(-1)
    kl = torch.nn.functional.kl_div(logits.log_softmax(-1), p, reduction="batchmean")
    entropy = -(p * p.log()).sum(-1).mean()
    torch.testing.assert_close(distillation_loss(logits, teacher), kl + entropy)


def test_student_context_is_zeros_then_the_template_phrase(tiny_backbone):
    method = build_method("prograd", tiny_backbone, NAMES)
    phrase = context_from_phrase(tiny_backbone, "a photo of a")
    assert method.ctx.shape == (16, tiny_backbone.text_width)
    assert torch.equal(method.ctx[12:].detach(), phrase) and not method.ctx[:12].any()
    assert method.needs == {"zs_logits"}
    assert build_method("prograd", tiny_backbone, NAMES, teacher_template="a type of pet, a photo of a {}.").needs == {
        "zs_image_features"
    }
