"""MaPLe, multi-modal prompt learning (Khattak et al., CVPR 2023): deep text prompts whose linear projections are
the visual prompts of the same layers, so both branches are tuned together."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import Tensor, nn

from calprompt.methods.base import MethodConfig, PromptMethod, register_method
from calprompt.methods.deep_prompts import (
    DeepTextPrompts,
    check_depth_option,
    check_text_context,
    layer_prompts,
    resolve_depth,
)


@dataclass(frozen=True)
class MaPLeConfig(MethodConfig):
    """MaPLe's settings; defaults are the paper's ViT-B/16 recipe (2 coupled tokens, depth 9).

    ``depth=None`` means 9 capped at the shallower encoder's layers (small test and toy backbones).
    """

    n_ctx: int = 2
    depth: int | None = None  # paper: 9
    ctx_init: str | None = "a photo of a"  # learn "a photo", keep "of a" fixed
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_text_context(self.n_ctx, "n_ctx", self.ctx_init, self.init_std)
        check_depth_option(self.depth, "depth")


@register_method("maple")
class MaPLe(PromptMethod):
    """Text context + deep text prompts; ``Linear(text width -> vision width)`` maps each to its layer's visual prompt.

    The layer-0 coupling ``proj`` and the per-layer copies ``deep_proj`` start with identical weights (the paper's
    code clones one freshly initialised layer) and are trained independently.
    """

    config_type = MaPLeConfig

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        config, backbone = self.config, self.backbone
        layers = min(backbone.text_layers, backbone.vision_layers)
        depth = resolve_depth(config.depth, 9, layers, "depth")
        self.text = DeepTextPrompts(backbone, config.n_ctx, depth, config.ctx_init, config.init_std)
        self.proj = nn.Linear(backbone.text_width, backbone.vision_width).to(backbone.device)
        coupling = nn.Linear(backbone.text_width, backbone.vision_width).to(backbone.device)
        self.deep_proj = nn.ModuleList([copy.deepcopy(coupling) for _ in range(depth - 1)])

    @property
    def image_encoder_untouched(self) -> bool:
        return False

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        self.text.build(self.backbone, classnames)

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        return self.text.encode(self.backbone)

    def encode_image(self, images: Tensor) -> Tensor:
        shallow = self.proj(self.text.ctx)  # (n_ctx, W)
        deep = [proj(prompt) for proj, prompt in zip(self.deep_proj, self.text.deep, strict=True)]  # (n_ctx, W) each
        return self.backbone.encode_image(images, prompts=shallow, deep_prompts=layer_prompts(deep))
