"""Frozen zero-shot text features: computed once per class list and template set, never per training step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import fail
from calprompt.clip.backbone import ClipBackbone
from calprompt.conventions import check_template, format_prompt


def class_prompts(classnames: Sequence[str], template: str) -> list[str]:
    """Fill ``template`` (with one ``{}``) with each cleaned class name."""
    check_template(template)
    return [format_prompt(template, name) for name in classnames]


@torch.no_grad()
def zero_shot_text_features(
    backbone: ClipBackbone,
    classnames: Sequence[str],
    templates: str | Sequence[str],
    *,
    batch_size: int = 512,
    normalize_each: bool = True,
    normalize: bool = True,
) -> Tensor:
    """L2-normalised (C, D) class text features; with several templates, the normalised mean of their features.

    ``normalize_each=False`` averages the raw (unnormalised) features instead, as PromptSRC's teacher does;
    ``normalize=False`` returns that mean itself, unnormalised (the class weights that TaskRes adds its residual to).
    """
    templates = [templates] if isinstance(templates, str) else list(templates)
    if not classnames or not templates:
        fail("classnames/templates", "non-empty", (len(classnames), len(templates)))
    # Every template's prompts in one batched pass (a few large calls instead of one small call per template).
    prompts = [prompt for template in templates for prompt in class_prompts(classnames, template)]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        ids = backbone.tokenize(prompts[start : start + batch_size])
        chunks.append(backbone.encode_text(ids, normalize=normalize_each).float())
    features = torch.cat(chunks).view(len(templates), len(classnames), -1)  # (T, C, D)
    return F.normalize(features.sum(dim=0), dim=-1) if normalize else features.mean(dim=0)
