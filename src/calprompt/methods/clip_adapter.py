"""CLIP-Adapter (Gao et al., CLIP-Adapter: Better Vision-Language Models with Feature Adapters, IJCV 2023): a
bottleneck MLP on frozen image features, blended with them by a residual ratio; the class text features are frozen
CLIP's for the dataset template, so the method can name any class (base-to-novel runs as for prompt methods).

``f' = ratio * MLP(f) + (1 - ratio) * f`` with ``MLP = ReLU(Linear(D -> D/4)) -> ReLU(Linear(D/4 -> D))``, no biases;
ratio 0.2 (the public code, the DAC repository's config and CLIPCalib). The public code applies it to the raw image
features; here it sees the normalised ones, which gives the same normalised ``f'``: without biases the MLP is
positively homogeneous (``MLP(a f) = a MLP(f)`` for ``a > 0``), so ``f'`` only scales with ``|f|``. The image encoder
is untouched, so training runs on cached frozen features.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from calprompt._validation import check_positive_int, fail
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.conventions import check_template
from calprompt.methods.base import MethodConfig, PromptMethod, register_method


@dataclass(frozen=True)
class ClipAdapterConfig(MethodConfig):
    """CLIP-Adapter's settings; defaults are the public ViT-B/16 recipe's (ratio 0.2, reduction 4)."""

    ratio: float = 0.2
    reduction: int = 4
    template: str = "a photo of a {}."

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, int | float) or not 0.0 <= self.ratio <= 1.0:
            fail("ratio", "a number in [0, 1] (the adapter's share of the blended image feature)", self.ratio)
        check_positive_int(self.reduction, "reduction")
        check_template(self.template)


@register_method("clip_adapter")
class ClipAdapter(PromptMethod):
    """A residual MLP head on frozen image features; frozen zero-shot text features (a buffer per class list)."""

    config_type = ClipAdapterConfig

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        dim = self.backbone.embed_dim
        if dim // self.config.reduction < 1:
            fail("reduction", f"at most the feature width {dim}", self.config.reduction)
        self.adapter = bottleneck_mlp(dim, self.config.reduction).to(self.backbone.device)

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        features = zero_shot_text_features(self.backbone, classnames, self.config.template)
        self.register_buffer("text_features", features, persistent=False)  # (C, D), normalised

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        return self.text_features

    def adapt_image_features(self, image_features: Tensor) -> Tensor:
        adapted = self.adapter(image_features.to(self.adapter[0].weight.dtype))
        return self.config.ratio * adapted + (1 - self.config.ratio) * image_features


def bottleneck_mlp(dim: int, reduction: int) -> nn.Sequential:
    """``Linear(D -> D / r) -> ReLU -> Linear(D / r -> D) -> ReLU``, no biases (PyTorch's default init)."""
    hidden = dim // reduction
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.ReLU())
