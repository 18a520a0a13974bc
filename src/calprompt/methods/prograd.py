"""ProGrad (Zhu et al., ICCV 2023): prompt-aligned gradients. CoOp's student is only moved where its gradient does not
conflict with the "general direction" of zero-shot CLIP.

Per step, with ``g`` the gradient of the training objective and ``g_kl`` the gradient of the distillation loss
``KL(p_teacher || p_student)`` (teacher = frozen CLIP with a hand-written template, temperature ``T``): where
``<g, g_kl> < 0``, ``g <- g - lambda * (<g, g_kl> / ||g_kl||^2) g_kl``, per parameter tensor; the optimizer steps
with ``g`` alone. A zero ``g_kl`` leaves ``g`` unchanged. Calibration terms (e.g. the paper's margin and moment terms)
join the cross-entropy side, so they are projected with it: the method's rule is applied to the whole objective it is
given. The student's 16 context vectors start at zero except the last ones, which hold the template phrase
("a photo of a"), as in ProGrad's public recipe; there is no published ViT-B/16 16-shot base-to-novel recipe, so the
recipe (recipes.yaml) uses CoOp's batch size and learning rate for 100 epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import check_non_negative, fail
from calprompt.clip.backbone import ClipBackbone
from calprompt.conventions import check_template
from calprompt.methods.base import MethodLosses, register_method, total_loss
from calprompt.methods.coop import CoOp, CoOpConfig
from calprompt.methods.text_prompts import initial_context, register_teacher


@dataclass(frozen=True)
class ProGradConfig(CoOpConfig):
    """CoOp's settings with ProGrad's defaults, plus the projection strength, temperature and teacher template."""

    n_ctx: int = 16
    init_std: float = 0.0  # context rows before the phrase: zeros
    projection: float = 1.0  # lambda: 1 removes the whole conflicting component
    temperature: float = 1.0
    teacher_template: str | None = None  # None: the dataset's zero-shot template (the loop's zs_logits)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self.projection, "projection")
        if check_non_negative(self.temperature, "temperature") == 0:
            fail("temperature", "a number > 0", self.temperature)
        if self.class_specific_context:
            fail("class_specific_context", "False for ProGrad (its student shares one context)", True)
        if self.teacher_template is not None:
            check_template(self.teacher_template, "teacher_template")


@register_method("prograd")
class ProGrad(CoOp):
    config_type = ProGradConfig

    @staticmethod
    def _initial_context(backbone: ClipBackbone, config: CoOpConfig) -> Tensor:
        return initial_context(backbone, config.n_ctx, config.ctx_init, config.init_std, pad=True)

    @property
    def needs(self) -> frozenset[str]:
        return frozenset({"zs_image_features"} if self.config.teacher_template is not None else {"zs_logits"})

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        super().build_prompts(classnames)
        register_teacher(self, self.backbone, classnames, self.config.teacher_template)

    def losses(self, inputs: Mapping[str, Any]) -> MethodLosses:
        if self.config.teacher_template is None:
            teacher_logits = inputs["zs_logits"]
        else:
            teacher_logits = self.backbone.logit_scale * inputs["zs_image_features"] @ self.teacher_text.t()
        kl = distillation_loss(inputs["logits"], teacher_logits, self.config.temperature)
        return {"kl": (0.0, kl)}  # weight 0: it steers the projection in `backward`, it is not added to the loss

    def backward(self, loss: Tensor, terms: MethodLosses, scale: Callable[[Tensor], Tensor]) -> None:
        params = list(self.trainable_parameters().values())
        others = {name: term for name, term in terms.items() if name != "kl"}
        grads = torch.autograd.grad(scale(total_loss(loss, others)), params, retain_graph=True, allow_unused=True)
        kl_grads = torch.autograd.grad(scale(terms["kl"][1]), params, allow_unused=True)
        for param, grad, kl_grad in zip(params, grads, kl_grads, strict=True):
            if grad is None:
                continue
            step = grad if kl_grad is None else project_conflicting(grad, kl_grad, self.config.projection)
            param.grad = step if param.grad is None else param.grad + step


def distillation_loss(logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * mean_b sum_c -p_teacher log p_student`` at temperature ``T`` (the KL up to the teacher's entropy,
    which has no gradient)."""
    teacher = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    return -(teacher * F.log_softmax(logits / temperature, dim=-1)).sum(dim=-1).mean() * temperature**2


def project_conflicting(grad: Tensor, general: Tensor, strength: float = 1.0) -> Tensor:
    """``grad`` with ``strength`` times its component along ``general`` removed when the two conflict (negative dot
    product); unchanged when they agree or ``general`` is zero. No host sync: the branch is a ``torch.where``."""
    dot = (grad * general).sum()
    norm_sq = (general * general).sum()
    conflict = (dot < 0) & (norm_sq > 0)
    coefficient = torch.where(conflict, dot / torch.where(norm_sq > 0, norm_sq, torch.ones_like(norm_sq)), 0.0)
    return grad - strength * coefficient * general
