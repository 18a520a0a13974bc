"""Deep prompts shared by IVLP, PromptSRC, MaPLe and VPT: learnable tokens at the input of the first layers.

Two building blocks, both hooked into the frozen backbone from outside (`ClipBackbone.encode_text_embeddings` /
`ClipBackbone.encode_image`), so they get its exact context truncation:

- :class:`DeepTextPrompts`: context vectors spliced into ``[SOS] {phrase} {class}. [EOS]`` at positions 1..n, plus
  one (n, D) prompt per deeper layer replacing positions 1..n at that layer's input (Khattak et al., MaPLe, CVPR
  2023; Rasheed et al., IVLP in the same paper's code base). Initialised from a phrase longer than n (MaPLe and IVLP
  learn "a photo" of "a photo of a"), the remaining phrase tokens stay fixed, so the layer-0 input is exactly the
  zero-shot sentence "a photo of a {class}.".
- :class:`DeepVisionPrompts`: (n, W) tokens appended after the patch tokens, replaced at the input of each deeper
  layer (Jia et al., VPT-deep, ECCV 2022).

A depth counts the layers that receive prompts, the input layer included: depth 1 is a shallow prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from calprompt._validation import check_non_negative, check_positive_int, fail
from calprompt.clip.backbone import ClipBackbone
from calprompt.methods.text_prompts import ClassPromptTokens, context_from_phrase


def resolve_depth(depth: int | None, default: int, layers: int, name: str) -> int:
    """``depth``, or the paper's ``default`` capped at the encoder's ``layers`` when unset (shallow test models)."""
    if depth is None:
        return min(default, layers)
    if not 1 <= depth <= layers:
        fail(name, f"an integer in [1, {layers}] (the encoder's layers)", depth)
    return depth


def check_depth_option(depth: int | None, name: str) -> None:
    """Validate a depth setting on its own (the backbone's layer count is checked when the method is built)."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        fail(name, "a positive integer or None (the paper's depth, capped at the encoder's layers)", depth)


def check_text_context(n_ctx: int, n_ctx_name: str, ctx_init: str | None, init_std: float) -> None:
    """Validate the text-context settings shared by IVLP, PromptSRC and MaPLe."""
    check_positive_int(n_ctx, n_ctx_name)
    check_non_negative(init_std, "init_std")
    if ctx_init is not None and not ctx_init.strip():
        fail("ctx_init", "a phrase or None", ctx_init)


def normal_prompts(count: int, tokens: int, width: int, std: float, device: torch.device) -> nn.ParameterList:
    """``count`` learnable (tokens, width) prompts ~ N(0, std), drawn from the (run-seeded) global generator."""
    return nn.ParameterList([nn.Parameter(torch.randn(tokens, width, device=device) * std) for _ in range(count)])


def layer_prompts(deep: Sequence[Tensor]) -> list[Tensor | None] | None:
    """The backbone's per-layer list: nothing replaced at layer 0 (it gets the shallow prompt), then ``deep``."""
    return [None, *deep] if len(deep) else None


class DeepTextPrompts(nn.Module):
    """Learnable text context (layer 0) and deep text prompts (layers 1..depth - 1) for one class list at a time."""

    def __init__(
        self,
        backbone: ClipBackbone,
        n_ctx: int,
        depth: int,
        ctx_init: str | None,
        init_std: float,
        *,
        n_ctx_setting: str = "n_ctx",
    ) -> None:
        super().__init__()
        device = backbone.device
        if ctx_init is None:
            context, fixed = torch.randn(n_ctx, backbone.text_width) * init_std, torch.zeros(0, backbone.text_width)
        else:
            phrase = context_from_phrase(backbone, ctx_init)  # (k, D)
            if phrase.shape[0] < n_ctx:
                fail(n_ctx_setting, f"at most {phrase.shape[0]} (the tokens of ctx_init {ctx_init!r})", n_ctx)
            context, fixed = phrase[:n_ctx], phrase[n_ctx:]  # learn the first n tokens, keep the rest fixed
        self.ctx = nn.Parameter(context.to(device))
        self.register_buffer("fixed", fixed.to(device), persistent=False)  # (k - n, D)
        self.deep = normal_prompts(depth - 1, n_ctx, backbone.text_width, init_std, device)
        self.tokens = ClassPromptTokens(n_ctx + fixed.shape[0])

    def build(self, backbone: ClipBackbone, classnames: Sequence[str]) -> None:
        self.tokens.build(backbone, classnames)

    def layer0_embeddings(self) -> Tensor:
        """The text encoder's input (C, L, D): SOS, the context, the fixed phrase tokens, the class, ".", EOS."""
        return self.tokens.assemble(torch.cat([self.ctx, self.fixed.to(self.ctx.dtype)]))

    def encode(self, backbone: ClipBackbone) -> Tensor:
        """Class text features (C, E), unnormalised."""
        embeddings = self.layer0_embeddings().to(backbone.dtype)
        return backbone.encode_text_embeddings(embeddings, self.tokens.ids, deep_prompts=layer_prompts(self.deep))


class DeepVisionPrompts(nn.Module):
    """Appended visual prompt tokens (layer 0) and their per-layer replacements (layers 1..depth - 1)."""

    def __init__(self, backbone: ClipBackbone, n_tokens: int, depth: int, init_std: float) -> None:
        super().__init__()
        device = backbone.device
        self.shallow = nn.Parameter(torch.randn(n_tokens, backbone.vision_width, device=device) * init_std)
        self.deep = normal_prompts(depth - 1, n_tokens, backbone.vision_width, init_std, device)

    def encode(self, backbone: ClipBackbone, images: Tensor) -> Tensor:
        """Image features (B, E) of the prompted image encoder, unnormalised."""
        return backbone.encode_image(images, prompts=self.shallow, deep_prompts=layer_prompts(self.deep))
