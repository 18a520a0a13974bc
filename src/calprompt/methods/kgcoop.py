"""KgCoOp (Yao et al., CVPR 2023): CoOp plus a knowledge-guided term keeping the tuned class text features close to
frozen CLIP's hand-written prompts.

Loss: ``CE + kg_weight * (1 - mean_c cos(t_c, t0_c))`` (the form of the public code; the paper writes the squared
distance of unit vectors, twice this). The teacher ``t0`` is the dataset template's zero-shot features, which the
training loop computes once per class list (``zs_text_features``), or another template's (``teacher_template``,
e.g. "a photo of a {}, a type of texture." for DTD), computed here once per class list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from calprompt._validation import check_non_negative
from calprompt.conventions import check_template
from calprompt.methods.base import MethodLosses, register_method
from calprompt.methods.coop import CoOp, CoOpConfig
from calprompt.methods.text_prompts import register_teacher


@dataclass(frozen=True)
class KgCoOpConfig(CoOpConfig):
    """CoOp's settings plus the weight of the knowledge-guided term and an optional teacher template."""

    kg_weight: float = 8.0
    teacher_template: str | None = None  # None: the dataset's zero-shot template

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self.kg_weight, "kg_weight")
        if self.teacher_template is not None:
            check_template(self.teacher_template, "teacher_template")


@register_method("kgcoop")
class KgCoOp(CoOp):
    config_type = KgCoOpConfig

    @property
    def needs(self) -> frozenset[str]:
        own_teacher = self.config.teacher_template is not None
        return frozenset({"text_features"} if own_teacher else {"text_features", "zs_text_features"})

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        super().build_prompts(classnames)
        register_teacher(self, self.backbone, classnames, self.config.teacher_template)

    def losses(self, inputs: Mapping[str, Any]) -> MethodLosses:
        teacher = self.teacher_text if self.config.teacher_template is not None else inputs["zs_text_features"]
        return {"kg": (self.config.kg_weight, knowledge_guidance(inputs["text_features"], teacher))}


def knowledge_guidance(tuned: Tensor, teacher: Tensor) -> Tensor:
    """``1 - mean_c cos(t_c, t0_c)`` for L2-normalised (C, D) features."""
    return 1.0 - (tuned * teacher.to(tuned.dtype)).sum(dim=-1).mean()
