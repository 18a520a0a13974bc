"""What the class-specific adapters on frozen features share (ZS-LP, CLAP, TaskRes): one weight vector per class,
starting from frozen CLIP's class text features, so they cannot name a class they were not trained on.

The starting weights are the *raw* (unnormalised) text features of the dataset template, averaged over the
templates when there are several (``extra_templates``; ImageNet's seven-template selection), as in the public code of
TaskRes and CLIPCalib; the logits normalise the tuned weights, so only their direction counts there, but a residual
added to them (TaskRes) and a distance to them (CLAP) see the raw scale. They are computed once, when the method is
built; the image encoder is untouched, so training runs on cached frozen image features.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.methods.base import PromptMethod
from calprompt.methods.zeroshot import ZeroShotConfig


@dataclass(frozen=True)
class ClassWeightsConfig(ZeroShotConfig):
    """The template(s) of the zero-shot class weights the method starts from (zero-shot CLIP's settings)."""


class ClassWeightsMethod(PromptMethod):
    """Base of the class-specific methods: holds ``base_text`` (C, D), frozen CLIP's raw class text features."""

    config_type = ClassWeightsConfig
    class_specific = True

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        templates = (self.config.template, *self.config.extra_templates)
        features = zero_shot_text_features(
            self.backbone, classnames, templates, normalize_each=False, normalize=False
        )  # (C, D), raw
        self.register_buffer("base_text", features, persistent=False)
        self.init_class_weights(features)

    def init_class_weights(self, base_text: Tensor) -> None:
        """Create the learnable per-class parameters from the frozen weights ``base_text`` (C, D)."""
        raise NotImplementedError

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        """Nothing to rebuild: the class list is the one the weights were built for (another one is refused)."""
