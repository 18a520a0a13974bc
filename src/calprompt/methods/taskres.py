"""TaskRes (Yu et al., Task Residual for Tuning Vision-Language Models, CVPR 2023): frozen zero-shot class weights
plus a learnable class residual scaled by ``alpha``: ``w_c = t_c + alpha * x_c``, with ``x`` starting at zero (the
public code of TaskRes, and the copies in the DAC repository and CLIPCalib). ``t_c`` are the raw (unnormalised)
text features (`calprompt.methods.class_weights`); the logits normalise ``w_c``.

``alpha`` is 0.5 as in CLIPCalib (and the TaskRes paper's default); the DAC repository's config leaves it at 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from calprompt._validation import check_non_negative
from calprompt.methods.base import register_method
from calprompt.methods.class_weights import ClassWeightsConfig, ClassWeightsMethod


@dataclass(frozen=True)
class TaskResConfig(ClassWeightsConfig):
    alpha: float = 0.5  # the residual's scale

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self.alpha, "alpha")


@register_method("taskres")
class TaskRes(ClassWeightsMethod):
    """Learnable ``residuals`` (C, D), zero at start, so the untrained method is zero-shot CLIP."""

    config_type = TaskResConfig

    def init_class_weights(self, base_text: Tensor) -> None:
        self.residuals = nn.Parameter(torch.zeros_like(base_text))

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        return task_residual(self.base_text, self.residuals, self.config.alpha)


def task_residual(base_text: Tensor, residuals: Tensor, alpha: float) -> Tensor:
    """``t + alpha * x`` (C, D): the class weights before normalisation."""
    return base_text + alpha * residuals.to(base_text.dtype)
