"""Label-free terms of test-time prompt tuning: TPT's loss and the text-side regularizers of C-TPT and O-TPT.

Formulas, for one test image, with ``z`` the (N, C) scaled logits of its views and ``T`` the L2-normalised (C, D)
class text features of its prompts:

- TPT (Shu et al., NeurIPS 2022): the confident views are the ``int(N * fraction)`` views of lowest prediction
  entropy (`confident_views`); the loss is the entropy of their *averaged probability*
  ``H(mean_k softmax(z_k))``, computed in log space (`marginal_entropy`).
- C-TPT (Yoon et al., ICLR 2024): average text feature dispersion ``ATFD = mean_c ||T_c - mean_c' T_c'||_2``;
  the loss subtracts ``lambda * ATFD`` (`negative_text_dispersion` returns ``-ATFD`` so that weights stay > 0).
- O-TPT (Sharifdeen et al., CVPR 2025), as its public code computes it: ``W = T T^T``; per row ``i`` a Householder
  reflection ``H_i = I - 2 v_i v_i^T`` with ``v_i = u_i / ||u_i||`` and ``u_i = W_i - ||W_i|| e_i``; the value is
  ``mean_i ||H_i W_i - e_i||_2`` (`householder_orthogonality`). The reflection maps ``W_i`` onto ``||W_i|| e_i``, so
  the value equals ``mean_i | ||W_i||_2 - 1 |``: it pulls each row norm of the Gram matrix to 1 and only indirectly
  the off-diagonal cosines to 0. The paper states the constraint as orthogonality of the class text features; the
  usual Gram form ``||T T^T - I||_F^2`` (the sum of squared off-diagonal cosines) is `gram_orthogonality` (preset
  ``o-tpt-gram``). docs/test-time.md says which is which.

Every term needs no labels, so a test-time run can use it. All compute in float32 (float64 stays float64) with
autocast disabled.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from calprompt._validation import fail
from calprompt.calibration._common import check_logits, full_precision, upcast
from calprompt.calibration.registry import register_term
from calprompt.calibration.terms import _check_features


def confident_count(views: int, fraction: float) -> int:
    """How many of ``views`` views TPT keeps: ``int(views * fraction)`` (6 of 64 at 0.1), refused when 0."""
    kept = int(views * fraction)
    if kept < 1:
        fail(
            "confident fraction",
            f"large enough to keep at least one of the {views} views (int(views x fraction) >= 1); raise "
            f"--confident-fraction to {math.ceil(1 / views * 1e6) / 1e6:g} or more, or --tta-views",
            fraction,
        )
    return kept


@full_precision
def view_entropy(logits: Tensor) -> Tensor:
    """Prediction entropy of each view (..., N) from logits (..., N, C)."""
    (z,) = upcast(logits)
    log_p = z.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1)


def confident_views(logits: Tensor, fraction: float) -> Tensor:
    """Indices (..., K) of the ``K = int(N * fraction)`` lowest-entropy views of logits (..., N, C), most confident
    first (a stable sort: ties keep the view order)."""
    kept = confident_count(logits.shape[-2], fraction)
    return torch.argsort(view_entropy(logits.detach()), dim=-1, stable=True)[..., :kept]


@register_term("tpt_entropy", needs=("logits",), role="base")
@full_precision
def marginal_entropy(logits: Tensor) -> Tensor:
    """Entropy of the averaged probability of (K, C) view logits (TPT's loss), or (B, K, C) -> (B,) per image.

    ``log mean_k p_k = logsumexp_k(log p_k) - log K``, clamped at the dtype's smallest value as TPT does, so a class
    whose probability underflows contributes 0 rather than nan.
    """
    if not isinstance(logits, Tensor) or logits.ndim not in (2, 3):
        check_logits(logits)  # raises with the expected shape
    (z,) = upcast(logits)
    log_p = z.log_softmax(-1)  # (..., K, C)
    log_mean = log_p.logsumexp(-2) - math.log(z.shape[-2])  # (..., C)
    log_mean = log_mean.clamp(min=torch.finfo(log_mean.dtype).min)
    return -(log_mean.exp() * log_mean).sum(-1)


@full_precision
def text_feature_dispersion(features: Tensor) -> Tensor:
    """C-TPT's ATFD of (C, D) features, or (B, C, D) -> (B,): the mean L2 distance of the class features to their
    centroid (features are used as given; pass them L2-normalised, as C-TPT does)."""
    (rows,) = upcast(_check_features(features, "features", (2, 3)))
    centroid = rows.mean(-2, keepdim=True)  # (..., 1, D)
    return torch.linalg.vector_norm(rows - centroid, dim=-1).mean(-1)


@register_term("negative_text_dispersion", needs=("text_features",))
@full_precision
def negative_text_dispersion(text_features: Tensor) -> Tensor:
    """``-ATFD``: C-TPT adds ``-lambda * ATFD`` to the loss, i.e. rewards spread-out class text features."""
    return -text_feature_dispersion(text_features).mean()


@register_term("householder_orthogonality", needs=("text_features",))
@full_precision
def householder_orthogonality(text_features: Tensor) -> Tensor:
    """O-TPT's orthogonality value as its code computes it (see the module docstring), for (C, D) features; (B, C, D)
    is averaged over B. The reflections are applied as ``x - 2 v (v . x)`` without forming the (C, C, C) matrices.

    A row already equal to ``||W_i|| e_i`` has ``u_i = 0``: the public code divides by 0 there (nan); here its
    reflection is the identity, which has the same value, ``| ||W_i|| - 1 |``.
    """
    (rows,) = upcast(_check_features(text_features, "text_features", (2, 3)))
    gram = rows @ rows.transpose(-2, -1)  # (..., C, C)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    row_norms = torch.linalg.vector_norm(gram, dim=-1)  # (..., C): ||W_i|| (W is symmetric: rows = columns)
    u = gram - eye * row_norms.unsqueeze(-2)  # (..., C, C): row i is W_i - ||W_i|| e_i
    u_norm = torch.linalg.vector_norm(u, dim=-1, keepdim=True)  # (..., C, 1)
    v = u / torch.where(u_norm > 0, u_norm, torch.ones_like(u_norm))
    reflected = gram - 2 * v * (v * gram).sum(-1, keepdim=True)  # (..., C, C): row i is H_i W_i
    return torch.linalg.vector_norm(reflected - eye, dim=-1).mean()


@register_term("gram_orthogonality", needs=("text_features",))
@full_precision
def gram_orthogonality(text_features: Tensor) -> Tensor:
    """``||T T^T - I||_F^2`` of L2-normalised (C, D) features (the sum of squared cosines between distinct classes);
    (B, C, D) is averaged over B."""
    (rows,) = upcast(_check_features(text_features, "text_features", (2, 3)))
    rows = torch.nn.functional.normalize(rows, dim=-1)
    gram = rows @ rows.transpose(-2, -1)  # (..., C, C)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return (gram - eye).square().sum((-2, -1)).mean()
