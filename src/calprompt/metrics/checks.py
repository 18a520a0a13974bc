"""Input checks for metrics and post-hoc calibrators: one small helper per concept.

Every helper accepts a ``torch.Tensor`` or a ``numpy.ndarray`` and returns a tensor on the input's device, so callers
never convert by hand. Messages follow the project form "Expected `x` to be ..., got ...".
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor

from calprompt._validation import fail

ArrayLike: TypeAlias = Tensor | np.ndarray

# Rows of a probability matrix must sum to 1 within this tolerance (float32 softmax over 1000 classes is ~1e-6 off).
PROB_SUM_ATOL = 1e-3


def as_tensor(value: Any, name: str) -> Tensor:
    """Return ``value`` as a tensor (no copy for tensors, zero-copy for numpy arrays)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    fail(name, "a torch.Tensor or numpy.ndarray", type(value).__name__)


def check_matrix(value: Any, name: str, layout: str = "(N, C)") -> Tensor:
    """Return ``value`` as a non-empty, finite, floating 2-D tensor; ``layout`` names its axes in messages."""
    tensor = as_tensor(value, name)
    if tensor.ndim != 2:
        fail(name, f"a 2-D {layout} array", f"shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        fail(name, "non-empty (both dimensions >= 1)", f"shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        fail(name, "a floating-point array", tensor.dtype)
    # Fast path: a finite sum proves every entry finite (NaN and inf propagate); only a non-finite sum (which may
    # also be an overflow of finite entries) needs the element-wise check.
    if not bool(torch.isfinite(tensor.sum())):
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            fail(name, "finite (no NaN or inf)", f"{bad} non-finite entries")
    return tensor


def check_logits(logits: Any, name: str = "logits") -> Tensor:
    """Return ``logits`` as a finite floating (N, C) tensor with N, C >= 1."""
    return check_matrix(logits, name)


def check_probs(probs: Any, name: str = "probs") -> Tensor:
    """Return ``probs`` as an (N, C) tensor of probabilities in [0, 1] whose rows sum to 1."""
    tensor = check_matrix(probs, name)
    low, high = torch.aminmax(tensor)
    if float(low) < 0 or float(high) > 1:
        fail(name, "probabilities in [0, 1] (pass logits to the logits variant instead)", "values outside [0, 1]")
    worst = float((tensor.sum(dim=1, dtype=torch.float64) - 1).abs().max())
    if worst > PROB_SUM_ATOL:
        fail(name, f"rows that sum to 1 (within {PROB_SUM_ATOL})", f"a row off by {worst:.3g}")
    return tensor


def check_labels(labels: Any, n_samples: int, n_classes: int, device: torch.device, name: str = "labels") -> Tensor:
    """Return ``labels`` as an int64 (N,) tensor on ``device`` with values in [0, n_classes)."""
    tensor = as_tensor(labels, name)
    if tensor.ndim != 1:
        fail(name, "a 1-D (N,) array of class indices", f"shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        fail(name, "an integer array of class indices", tensor.dtype)
    if tensor.shape[0] != n_samples:
        fail(name, f"of length {n_samples} (one label per row of the scores)", f"length {tensor.shape[0]}")
    tensor = tensor.to(device=device, dtype=torch.int64)
    low, high = int(tensor.min()), int(tensor.max())
    if low < 0 or high >= n_classes:
        fail(name, f"class indices in [0, {n_classes - 1}]", f"values in [{low}, {high}]")
    return tensor
