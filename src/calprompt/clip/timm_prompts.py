"""Visual prompt tokens inside timm image towers (SigLIP's attention-pooled ViT, EVA-CLIP's EVA), run from outside.

open_clip wraps these towers as a ``TimmModel`` (``trunk`` = the timm model, ``head`` = open_clip's projection).
The prompted pass re-runs the trunk's own modules in the order of its ``forward_features`` / ``forward_head``:

- the prompt tokens (P, W) are appended after the patch tokens *after* ``_pos_embed`` (no positional embedding,
  as in VPT and in open_clip's ViT here) and before ``norm_pre``;
- deep prompts replace those P tokens at the input of the blocks they are given for;
- in EVA's rotary attention the prompt tokens get the identity rotation (sin 0, cos 1): rotary embedding is the
  positional code there, and prompts have no position;
- the prompt tokens are removed before the final norm and the pooling. For token or average pooling this is
  VPT's rule (the feature is the class token's or the patches'). For SigLIP's attention pooling (``map``: a
  learned query attending to every token) it keeps prompts out of the pooled keys and values, so that they act
  only through the blocks' attention, as with a class token, and the pooler sees the token count it was trained
  with (a pooler with its own position table could not take more).

Without prompts (or with zero of them) the pass equals open_clip's ``encode_image``. Towers of another kind
(convolutional trunks, dynamic image sizes, depth-mixed rotary embeddings) are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from calprompt._validation import fail
from calprompt.clip.kernels import expand_prompt, replace_tokens


def timm_trunk(visual: nn.Module) -> nn.Module | None:
    """The timm model inside an open_clip ``TimmModel``, or None."""
    return getattr(visual, "trunk", None) if type(visual).__name__ == "TimmModel" else None


def unhosted_reason(visual: nn.Module) -> str | None:
    """Why visual prompts cannot be placed exactly in this timm tower, or None when they can."""
    trunk = timm_trunk(visual)
    if trunk is None:
        return "it is not a timm tower"
    kind = type(trunk).__name__
    if kind not in ("VisionTransformer", "Eva"):
        return f"its timm trunk is a {kind}, not a ViT (prompt tokens are placed in timm ViT and EVA blocks only)"
    if getattr(trunk, "dynamic_img_size", False):
        return "its timm trunk resizes position embeddings per image (dynamic_img_size)"
    if getattr(trunk, "rope_mixed", False):
        return "its timm EVA trunk uses depth-mixed rotary embeddings"
    return None


def layers(visual: nn.Module) -> int:
    return len(visual.trunk.blocks)


def width(visual: nn.Module) -> int:
    return int(visual.trunk.embed_dim)


def encode_prompted(
    visual: nn.Module, images: Tensor, prompts: Tensor | None, deep_prompts: Sequence[Tensor | None] | None
) -> Tensor:
    """Image features (N, E) of a timm tower with appended visual prompt tokens (module docstring)."""
    trunk = visual.trunk
    eva = type(trunk).__name__ == "Eva"
    x = trunk.patch_embed(images)  # (N, g*g, W)
    if eva:
        x, rope = trunk._pos_embed(x)  # rope: (g*g, 2 * head_dim) sin | cos, or None
    else:
        x, rope = trunk.patch_drop(trunk._pos_embed(x)), None  # (N, T, W): prefix tokens + patches
    n_tokens = x.shape[1]
    if prompts is not None:
        x = torch.cat([x, expand_prompt(prompts, x.shape[0]).to(x.dtype)], dim=1)  # (N, T + P, W)
        if rope is not None:
            sin, cos = rope.chunk(2, dim=-1)
            count = x.shape[1] - n_tokens
            identity = torch.cat([sin.new_zeros(count, sin.shape[-1]), cos.new_ones(count, cos.shape[-1])], dim=-1)
            rope = torch.cat([rope, identity], dim=-2)  # (g*g + P, 2 * head_dim): prompts unrotated
    x = trunk.norm_pre(x)
    for index, block in enumerate(trunk.blocks):
        prompt = deep_prompts[index] if deep_prompts is not None and index < len(deep_prompts) else None
        if prompt is not None:
            if prompt.shape[-2] != x.shape[1] - n_tokens:
                fail(f"deep_prompts[{index}]", f"{x.shape[1] - n_tokens} tokens like `prompts`", prompt.shape[-2])
            x = replace_tokens(x, prompt, n_tokens)
        x = block(x, rope=rope) if eva else block(x)
    x = trunk.norm(x[:, :n_tokens])  # prompts leave before the final norm and the pooling
    return visual.head(trunk.forward_head(x))
