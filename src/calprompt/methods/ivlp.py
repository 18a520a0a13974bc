"""IVLP, independent vision-language prompting (Khattak et al., MaPLe, CVPR 2023, its baseline): deep text prompts
and deep visual prompts learned separately, with no coupling between the two branches."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from calprompt._validation import check_non_negative_int
from calprompt.methods.base import MethodConfig, PromptMethod, register_method
from calprompt.methods.deep_prompts import (
    DeepTextPrompts,
    DeepVisionPrompts,
    check_depth_option,
    check_text_context,
    resolve_depth,
)


@dataclass(frozen=True)
class IVLPConfig(MethodConfig):
    """IVLP's settings; defaults are the paper's ViT-B/16 base-to-novel recipe (2 + 2 tokens, depth 12).

    A depth of ``None`` means the paper's depth capped at the encoder's layers (small test and toy backbones).
    ``n_ctx_vision=0`` learns text prompts only: the image encoder is then untouched and its features are cached.
    """

    n_ctx_text: int = 2
    n_ctx_vision: int = 2
    text_depth: int | None = None  # paper: 12
    vision_depth: int | None = None  # paper: 12
    ctx_init: str | None = "a photo of a"  # learn its first n_ctx_text tokens, keep the rest ("of a") fixed
    init_std: float = 0.02

    #: The paper's depths, used when ``text_depth`` / ``vision_depth`` are None.
    paper_depth = 12

    def __post_init__(self) -> None:
        check_text_context(self.n_ctx_text, "n_ctx_text", self.ctx_init, self.init_std)
        check_non_negative_int(self.n_ctx_vision, "n_ctx_vision", expected="an integer >= 0 (0: no visual prompts)")
        check_depth_option(self.text_depth, "text_depth")
        check_depth_option(self.vision_depth, "vision_depth")


@register_method("ivlp")
class IVLP(PromptMethod):
    """Deep text prompts (replacing positions 1..n_t) and deep visual prompts (appended tokens), independently."""

    config_type = IVLPConfig

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        config, backbone = self.config, self.backbone
        text_depth = resolve_depth(config.text_depth, config.paper_depth, backbone.text_layers, "text_depth")
        self.text = DeepTextPrompts(
            backbone, config.n_ctx_text, text_depth, config.ctx_init, config.init_std, n_ctx_setting="n_ctx_text"
        )
        self.vision: DeepVisionPrompts | None = None
        if config.n_ctx_vision:
            depth = resolve_depth(config.vision_depth, config.paper_depth, backbone.vision_layers, "vision_depth")
            self.vision = DeepVisionPrompts(backbone, config.n_ctx_vision, depth, config.init_std)

    @property
    def image_encoder_untouched(self) -> bool:
        return self.config.n_ctx_vision == 0

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        self.text.build(self.backbone, classnames)

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        return self.text.encode(self.backbone)

    def encode_image(self, images: Tensor) -> Tensor:
        if self.vision is None:
            return super().encode_image(images)
        return self.vision.encode(self.backbone, images)
