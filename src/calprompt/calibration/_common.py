"""Shared plumbing of the loss components: full-precision math and cheap shape checks.

The regularizers must run in float32 even when the model runs in fp16/bf16: in fp16 the covariance differences of
text moment matching (~1e-8) underflow to zero, and margins of scale-100 logits lose their low bits. float64 inputs
stay float64 so that ``torch.autograd.gradcheck`` works. The checks only read shapes and dtypes, so they never force
a device sync.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, ParamSpec, TypeVar

import torch
from torch import Tensor

from calprompt._validation import fail

P = ParamSpec("P")
R = TypeVar("R")


def full_precision(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        device_type = first.device.type if first is not None else "cpu"
        if torch.amp.is_autocast_available(device_type):
            context: Any = torch.autocast(device_type=device_type, enabled=False)
        else:  # e.g. "meta": there is no autocast to disable
            context = nullcontext()
        with context:
            return fn(*args, **kwargs)

    return wrapper


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (fp16/bf16 are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def upcast(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Cast all tensors to their common :func:`compute_dtype`."""
    dtype = compute_dtype(*tensors)
    return tuple(t.to(dtype) for t in tensors)


def check_logits(logits: Any, name: str = "logits", min_classes: int = 1) -> Tensor:
    """Require a floating (B, C) tensor with C >= ``min_classes``."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        fail(name, "a floating-point tensor of shape (batch, classes)", got)
    if logits.shape[1] < min_classes:
        fail(name, f"a tensor with at least {min_classes} classes (dim 1)", tuple(logits.shape))
    return logits


def check_labels(labels: Any, logits: Tensor) -> Tensor:
    """Require integer labels of shape (B,) matching ``logits``; returned as int64 for gather/cross-entropy."""
    integer = isinstance(labels, Tensor) and not (labels.is_floating_point() or labels.is_complex())
    if not integer or labels.dtype == torch.bool:
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        fail("labels", "an integer tensor of class indices", got)
    if labels.shape != logits.shape[:1]:
        fail("labels", f"of shape ({logits.shape[0]},) to match `logits` {tuple(logits.shape)}", tuple(labels.shape))
    return labels.long()


def check_same_shape(other: Any, name: str, logits: Tensor) -> Tensor:
    """Require a floating tensor of the same shape as ``logits``."""
    check_logits(other, name)
    if other.shape != logits.shape:
        fail(name, f"of the same shape as `logits` {tuple(logits.shape)}", tuple(other.shape))
    return other
