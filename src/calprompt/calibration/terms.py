"""The paper's two regularizers (mean-variance margin, text moment matching) and plain cross-entropy.

Formulas (Sharifdeen et al., CVPR 2026), with ``z`` the tuned scaled logits and ``T`` the L2-normalised
(C, D) class text features:

- margin ``m_i = z[i, y_i] - max_{j != y_i} z[i, j]``;
  ``R_margin = -alpha * mean_i(m_i) + beta * var_i(m_i)`` (biased variance);
- ``mu = mean_c T[c]``, ``Sigma = (T - mu)^T (T - mu) / C``;
  ``L_mm = ||mu - mu0||^2 + ||Sigma - Sigma0||_F^2`` against the frozen zero-shot text features ``T0``.

All functions compute in float32 (float64 stays float64) with autocast disabled and return 0-dim tensors on the
input device.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import fail
from calprompt.calibration._common import check_labels, check_logits, compute_dtype, full_precision, upcast
from calprompt.calibration.registry import register_term


class TextMoments(NamedTuple):
    """First and second moments of L2-normalised class text features: ``mean`` (D,), ``cov`` (D, D), biased."""

    mean: Tensor
    cov: Tensor

    def to(self, *args: Any, **kwargs: Any) -> TextMoments:
        """Move/cast both moments, like :meth:`torch.Tensor.to`."""
        return TextMoments(self.mean.to(*args, **kwargs), self.cov.to(*args, **kwargs))


@register_term("cross_entropy", needs=("logits", "labels"), role="base")
@full_precision
def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy, computed in float32."""
    labels = check_labels(labels, check_logits(logits))
    (z,) = upcast(logits)
    return F.cross_entropy(z, labels)


@full_precision
def logit_margins(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample margins (B,): the true-class logit minus the largest other logit (0 on a tie)."""
    labels = check_labels(labels, check_logits(logits, min_classes=2))
    (z,) = upcast(logits)
    target = z.gather(1, labels[:, None]).squeeze(1)  # (B,)
    is_target = torch.arange(z.shape[1], device=z.device)[None, :] == labels[:, None]  # (B, C)
    rival = z.masked_fill(is_target, float("-inf")).amax(dim=1)  # (B,)
    return target - rival


@register_term("margin_mean_variance", needs=("logits", "labels"))
@full_precision
def margin_mean_variance(logits: Tensor, labels: Tensor, alpha: float = 0.1, beta: float = 0.01) -> Tensor:
    """``-alpha * mean(m) + beta * var(m)`` over the batch's margins: widens margins, keeps them alike.

    Base classes turn under-confident under prompt tuning because margins shrink; the mean term pushes them
    apart while the variance term stops a few samples from taking all the margin.
    """
    margins = logit_margins(logits, labels)
    return -alpha * margins.mean() + beta * margins.var(correction=0)


def _moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (..., D) and biased covariance (..., D, D) of the L2-normalised rows of (..., C, D) features."""
    rows = F.normalize(features, dim=-1)
    mean = rows.mean(dim=-2)  # (..., D)
    centered = rows - mean.unsqueeze(-2)  # (..., C, D)
    cov = centered.transpose(-2, -1) @ centered / rows.shape[-2]  # (..., D, D)
    return mean, cov


def _check_features(features: Any, name: str, ndims: tuple[int, ...]) -> Tensor:
    if not isinstance(features, Tensor) or features.ndim not in ndims or not features.is_floating_point():
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        shapes = " or ".join({2: "(classes, dim)", 3: "(batch, classes, dim)"}[n] for n in ndims)
        fail(name, f"a floating-point tensor of shape {shapes}", got)
    if features.shape[-2] == 0:
        fail(name, "a tensor with at least one class row", tuple(features.shape))
    return features


@full_precision
def text_moments(features: Tensor) -> TextMoments:
    """Moments of (C, D) frozen text features; compute once per class list, not per step."""
    (rows,) = upcast(_check_features(features, "features", (2,)))
    return TextMoments(*_moments(rows))


@register_term("text_moment_matching", needs=("text_features", "zs_text_moments"))
@full_precision
def text_moment_matching(tuned: Tensor, frozen: Tensor | TextMoments) -> Tensor:
    """``||mu - mu0||^2 + ||Sigma - Sigma0||_F^2``: keeps the tuned text space as spread out as zero-shot CLIP's.

    ``tuned`` is (C, D), or (B, C, D) for per-image text features (CoCoOp), then matched per image and averaged.
    ``frozen`` is the (C0, D) zero-shot features or their precomputed :func:`text_moments`.
    """
    _check_features(tuned, "tuned", (2, 3))
    if isinstance(frozen, TextMoments):
        mean0, cov0 = frozen
    else:
        mean0, cov0 = None, _check_features(frozen, "frozen", (2,))
    dim = tuned.shape[-1]
    if cov0.shape[-1] != dim:
        fail("frozen", f"features or moments of dimension {dim} like `tuned`", tuple(cov0.shape))
    dtype = compute_dtype(tuned, cov0)
    if mean0 is None:
        mean0, cov0 = _moments(cov0.to(dtype))
    mean, cov = _moments(tuned.to(dtype))  # (..., D), (..., D, D)
    per_set = (mean - mean0.to(dtype)).square().sum(-1) + (cov - cov0.to(dtype)).square().sum((-2, -1))  # () or (B,)
    return per_set.mean()
