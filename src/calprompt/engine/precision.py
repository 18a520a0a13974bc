"""Mixed precision for the training and evaluation loops: bf16/fp16 autocast, or nothing for fp32."""

from __future__ import annotations

import contextlib

import torch

from calprompt.conventions import PRECISIONS

__all__ = ["PRECISIONS", "autocast"]


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
