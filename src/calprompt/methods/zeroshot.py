"""Zero-shot CLIP as a method without parameters: the reference every table starts from."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.conventions import check_template
from calprompt.methods.base import MethodConfig, PromptMethod, register_method


@dataclass(frozen=True)
class ZeroShotConfig(MethodConfig):
    """The hand-written template(s); several templates are ensembled (mean of normalised features)."""

    template: str = "a photo of a {}."
    extra_templates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for template in (self.template, *self.extra_templates):
            check_template(template)


@register_method("zeroshot")
class ZeroShotCLIP(PromptMethod):
    """Frozen text features of the dataset template; nothing to train."""

    config_type = ZeroShotConfig

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        templates = (self.config.template, *self.config.extra_templates)
        self.register_buffer(
            "text_features", zero_shot_text_features(self.backbone, classnames, templates), persistent=False
        )

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        return self.text_features
