"""Train-time calibration baselines: MbLS, ZS-Norm, Penalty, label smoothing and focal loss.

Definitions: MbLS (Liu et al., CVPR 2022), ZS-Norm and Penalty (Murugesan et al., ECCV 2024), label smoothing,
focal loss (Lin et al., 2017); each function states its formula (docs/objectives.md lists the presets and their
constants). ``z`` is (B, C) tuned scaled logits and ``z0`` the frozen zero-shot CLIP logits of the same images.
Computed in float32 (float64 stays float64) with autocast disabled; 0-dim results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import check_non_negative, fail
from calprompt.calibration._common import check_labels, check_logits, check_same_shape, full_precision, upcast
from calprompt.calibration.registry import register_term


def _check_unit_interval(value: object, name: str) -> float:
    number = check_non_negative(value, name)
    if number > 1.0:
        fail(name, "a number in [0, 1]", value)
    return number


@register_term("mbls_penalty", needs=("logits",))
@full_precision
def mbls_penalty(logits: Tensor, margin: float = 10.0) -> Tensor:
    """MbLS: ``mean_ij relu(max_k z_ik - z_ij - margin)``, only logit gaps beyond ``margin`` are pulled in."""
    check_non_negative(margin, "margin")
    (z,) = upcast(check_logits(logits))
    gaps = z.amax(dim=1, keepdim=True) - z  # (B, C), >= 0
    return F.relu(gaps - margin).mean()


@full_precision
def zs_norm_logits(logits: Tensor, zs_logits: Tensor) -> Tensor:
    """ZS-Norm: rescale each row of ``logits`` affinely onto the row's zero-shot range [min z0, max z0].

    The row minimum maps exactly to ``min z0`` and the maximum exactly to ``max z0``. A constant row has no range
    to rescale and maps to ``min z0`` everywhere (instead of 0/0).
    """
    z, z0 = upcast(check_logits(logits), check_same_shape(zs_logits, "zs_logits", logits))
    low, high = z.amin(dim=1, keepdim=True), z.amax(dim=1, keepdim=True)  # (B, 1)
    span = high - low
    position = (z - low) / torch.where(span > 0, span, torch.ones_like(span))  # (B, C) in [0, 1]
    # lerp returns its end points exactly at weights 0 and 1, unlike low0 + t * (high0 - low0).
    return torch.lerp(z0.amin(dim=1, keepdim=True), z0.amax(dim=1, keepdim=True), position)


@register_term("zs_norm_cross_entropy", needs=("logits", "labels", "zs_logits"), role="base")
@full_precision
def zs_norm_cross_entropy(logits: Tensor, labels: Tensor, zs_logits: Tensor) -> Tensor:
    """ZS-Norm's training loss: cross-entropy on :func:`zs_norm_logits` (inference keeps the raw logits)."""
    labels = check_labels(labels, check_logits(logits))
    return F.cross_entropy(zs_norm_logits(logits, zs_logits), labels)


@register_term("zs_range_penalty", needs=("logits", "zs_logits"))
@full_precision
def zs_range_penalty(logits: Tensor, zs_logits: Tensor) -> Tensor:
    """Penalty's bracket: ``mean_ij relu(z_ij - max_k z0_ik) + mean_ij relu(min_k z0_ik - z_ij)`` (unweighted)."""
    z, z0 = upcast(check_logits(logits), check_same_shape(zs_logits, "zs_logits", logits))
    above = F.relu(z - z0.amax(dim=1, keepdim=True)).mean()
    below = F.relu(z0.amin(dim=1, keepdim=True) - z).mean()
    return above + below


@register_term(
    "label_smoothing_cross_entropy", needs=("logits", "labels"), role="base", checks={"smoothing": _check_unit_interval}
)
@full_precision
def label_smoothing_cross_entropy(logits: Tensor, labels: Tensor, smoothing: float = 0.1) -> Tensor:
    """Cross-entropy against ``(1 - smoothing) * onehot + smoothing / C``."""
    _check_unit_interval(smoothing, "smoothing")
    labels = check_labels(labels, check_logits(logits))
    (z,) = upcast(logits)
    return F.cross_entropy(z, labels, label_smoothing=smoothing)


@register_term("focal_loss", needs=("logits", "labels"), role="base")
@full_precision
def focal_loss(logits: Tensor, labels: Tensor, gamma: float = 3.0) -> Tensor:
    """Focal loss ``mean_i -(1 - p_iy)^gamma log p_iy``: down-weights samples that are already confident."""
    check_non_negative(gamma, "gamma")
    labels = check_labels(labels, check_logits(logits))
    (z,) = upcast(logits)
    log_p = z.log_softmax(dim=1).gather(1, labels[:, None]).squeeze(1)  # (B,)
    # expm1 keeps 1 - p accurate near p = 1; the floor keeps the gradient finite for 0 < gamma < 1 when p rounds to 1.
    miss = (-torch.expm1(log_p)).clamp_min(torch.finfo(z.dtype).tiny)
    return -(miss.pow(gamma) * log_p).mean()
