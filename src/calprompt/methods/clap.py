"""CLAP (Silva-Rodriguez et al., A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models, CVPR 2024):
the zero-shot-initialised linear probe (`calprompt.methods.zslp`) with a class-adaptive constraint that keeps each
class weight close to its zero-shot start, in proportion to how well zero-shot CLIP already recognises the class.

Term (the public code of CLAP and CLIPCalib, constraint ``l2``): ``mean_c lambda_c * ||w_c - t_c||^2`` over the raw
class weights ``w`` and their raw zero-shot start ``t``, where the multiplier ``lambda_c`` is zero-shot CLIP's mean
probability of class ``c`` over the training images of class ``c``, computed once before training (from the
first epoch's views; the public code uses the augmented views it caches) and kept fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import fail
from calprompt.methods.base import MethodLosses, register_method
from calprompt.methods.zslp import ZeroShotLinearProbe


@register_method("clap")
class CLAP(ZeroShotLinearProbe):
    """ZS-LP plus the class-adaptive constraint (``clap_constraint``, weight 1, as in the public code)."""

    _multipliers: Tensor | None = None

    def on_fit_start(self, frozen_features: Callable[[], Tensor], labels: Tensor) -> None:
        if self._multipliers is None:  # a resumed run restored the ones it started with
            zs_logits = (
                self.backbone.logit_scale
                * F.normalize(frozen_features().float(), dim=-1)
                @ F.normalize(self.base_text.float(), dim=-1).t()
            )  # (N, C)
            self._multipliers = class_multipliers(zs_logits, labels.to(zs_logits.device))

    def losses(self, inputs: Mapping[str, Any]) -> MethodLosses:
        if self._multipliers is None:
            fail("CLAP's multipliers", "set before training (Trainer.fit calls on_fit_start)", None)
        value = class_adaptive_constraint(self.prototypes, self.base_text, self._multipliers)
        return {"clap_constraint": (1.0, value)}

    def extra_state(self) -> dict[str, Tensor]:
        return {} if self._multipliers is None else {"multipliers": self._multipliers}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if set(state) - {"multipliers"}:
            fail("CLAP state", "at most its multipliers", sorted(state))
        multipliers = state.get("multipliers")
        self._multipliers = None if multipliers is None else multipliers.to(self.backbone.device).float()


def class_multipliers(zs_logits: Tensor, labels: Tensor) -> Tensor:
    """``lambda_c`` (C,): the mean zero-shot probability of class ``c`` over the items labelled ``c``."""
    num_classes = zs_logits.shape[1]
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        fail(
            "CLAP's training labels",
            "at least one item of every class",
            f"none for classes {counts.eq(0).nonzero().flatten().tolist()}",
        )
    probability = zs_logits.softmax(dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)  # (N,) of the true class
    sums = torch.zeros(num_classes, dtype=probability.dtype, device=probability.device).index_add_(
        0, labels, probability
    )
    return sums / counts.to(probability.dtype)


def class_adaptive_constraint(weights: Tensor, start: Tensor, multipliers: Tensor) -> Tensor:
    """``mean_c lambda_c * ||w_c - t_c||^2`` for raw class weights (C, D)."""
    distance = (weights - start.to(weights.dtype)).square().sum(dim=-1)  # (C,)
    return (multipliers.to(weights.dtype) * distance).mean()
