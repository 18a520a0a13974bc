"""Tiny open_clip models for tests: real tokenizer vocabulary, random init, built in milliseconds."""

from __future__ import annotations

import open_clip
import torch

# A tiny CLIP with the real tokenizer's vocabulary and the full 77-token context.
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 48, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
}


def make_tiny_clip(seed: int = 0, quick_gelu: bool = False) -> open_clip.CLIP:
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CFG, quick_gelu=quick_gelu)
    return model.eval()
