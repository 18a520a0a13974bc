"""Frozen CLIP backbones with hooks for prompt learners (built on open_clip, never forked)."""

from calprompt.clip.backbone import CLIP_MEAN, CLIP_STD, ClipBackbone, DeepPrompts, Preprocess
from calprompt.clip.loading import (
    EMBEDDED_BACKBONES,
    WeightsNotFoundError,
    load_clip,
    preprocess_of,
    wrap_open_clip_model,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "EMBEDDED_BACKBONES",
    "ClipBackbone",
    "DeepPrompts",
    "Preprocess",
    "WeightsNotFoundError",
    "load_clip",
    "preprocess_of",
    "wrap_open_clip_model",
]
