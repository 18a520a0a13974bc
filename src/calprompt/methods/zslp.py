"""ZS-LP: the zero-shot-initialised linear probe (the baseline of Silva-Rodriguez et al., CLAP, CVPR 2024; as in
the public code of CLAP and CLIPCalib): a linear classifier on frozen image features whose class weights start at
frozen CLIP's class text features. Logits: ``exp(logit_scale) * cos(image, w_c)``; loss CE (plus the objective)."""

from __future__ import annotations

from torch import Tensor, nn

from calprompt.methods.base import register_method
from calprompt.methods.class_weights import ClassWeightsMethod


@register_method("zslp")
class ZeroShotLinearProbe(ClassWeightsMethod):
    """Learnable class weights ``prototypes`` (C, D), initialised to the raw zero-shot text features."""

    def init_class_weights(self, base_text: Tensor) -> None:
        self.prototypes = nn.Parameter(base_text.clone())

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        return self.prototypes
