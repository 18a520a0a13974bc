"""VPT-deep (Jia et al., Visual Prompt Tuning, ECCV 2022) on CLIP: visual prompt tokens at every layer, fixed text.

As in the base-to-novel benchmark of Khattak et al. (MaPLe, CVPR 2023), the class text features are frozen CLIP's
for "a photo of a {}." (computed once per class list); only the image encoder is prompted.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from calprompt._validation import check_non_negative, check_positive_int
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.conventions import check_template
from calprompt.methods.base import MethodConfig, PromptMethod, register_method
from calprompt.methods.deep_prompts import DeepVisionPrompts, check_depth_option, resolve_depth


@dataclass(frozen=True)
class VPTConfig(MethodConfig):
    """VPT-deep's settings; defaults are the benchmark's ViT-B/16 recipe (8 tokens, depth 12).

    ``depth=None`` means 12 capped at the encoder's layers; ``depth=1`` is VPT-shallow. ``text_template`` is not
    the dataset's template on purpose: the benchmark fixes the text to the plain CLIP prompt.
    """

    n_ctx: int = 8
    depth: int | None = None  # paper: 12
    text_template: str = "a photo of a {}."
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_positive_int(self.n_ctx, "n_ctx")
        check_depth_option(self.depth, "depth")
        check_non_negative(self.init_std, "init_std")
        check_template(self.text_template, "text_template")


@register_method("vpt")
class VPT(PromptMethod):
    """Deep visual prompts; text features are a frozen buffer (no text encoding during training)."""

    config_type = VPTConfig

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        depth = resolve_depth(self.config.depth, 12, self.backbone.vision_layers, "depth")
        self.vision = DeepVisionPrompts(self.backbone, self.config.n_ctx, depth, self.config.init_std)

    @property
    def image_encoder_untouched(self) -> bool:
        return False

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        features = zero_shot_text_features(self.backbone, classnames, self.config.text_template)
        self.register_buffer("text_features", features, persistent=False)  # (C, E), normalised

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        return self.text_features

    def encode_image(self, images: Tensor) -> Tensor:
        return self.vision.encode(self.backbone, images)
