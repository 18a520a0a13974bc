"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022), in the form of CLIPCalib's adapters (Murugesan et al.,
ECCV 2024): zero-shot CLIP plus a key-value cache of the few-shot training features.

Logits: ``s f w^T + alpha * exp(-beta (1 - f K^T)) V``, with ``f`` the normalised image feature, ``w`` the
normalised zero-shot class weights (`calprompt.methods.class_weights`), ``K`` (N, D) the normalised cache keys (the
training items' frozen image features) and ``V`` (N, C) their one-hot labels; alpha = beta = 1 (CLIPCalib's values
outside its grid search). Tip-Adapter is training-free: the cache is built when training starts
(:meth:`PromptMethod.on_fit_start`, from the loop's feature cache) and nothing is optimised. Tip-Adapter-F learns
the keys (N x D parameters), CLIPCalib's recipe. The values name the training classes, so both are class-specific.

Departures, both for reasons: CLIPCalib multiplies the *unnormalised* image feature by the normalised keys (its
zero-shot term normalises it), so its cache term depends on the backbone's feature norm; Tip-Adapter's paper and code
normalise both, as here (the two agree on unit-norm features, which the test checks). CLIPCalib builds the keys from
the un-augmented training images; here they are the loop's first-epoch views (augmented, cached like every view).
Before the cache exists the logits are zero-shot CLIP's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calprompt._validation import check_non_negative, fail
from calprompt.methods.base import register_method
from calprompt.methods.class_weights import ClassWeightsConfig, ClassWeightsMethod

_CACHE = ("cache_keys", "cache_values")


@dataclass(frozen=True)
class TipAdapterConfig(ClassWeightsConfig):
    """The zero-shot template(s), the cache's weight ``alpha`` and its sharpness ``beta``."""

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self.alpha, "alpha")
        check_non_negative(self.beta, "beta")


def cache_logits(image_features: Tensor, keys: Tensor, values: Tensor, beta: float) -> Tensor:
    """``exp(-beta (1 - f K^T)) V`` (B, C) for normalised ``f`` (B, D), raw keys (N, D) and values (N, C)."""
    affinity = image_features @ F.normalize(keys, dim=-1).to(image_features.dtype).t()  # (B, N)
    return torch.exp(-beta * (1.0 - affinity)) @ values.to(image_features.dtype)


@register_method("tip_adapter")
class TipAdapter(ClassWeightsMethod):
    """Zero-shot CLIP plus a cache of the training features (built in :meth:`on_fit_start`, never trained)."""

    config_type = TipAdapterConfig
    class_specific_reason = "builds its cache keys and one-hot values from the tuned classes' training shots"
    learn_keys: ClassVar[bool] = False

    def init_class_weights(self, base_text: Tensor) -> None:
        self.register_buffer("cache_keys", None, persistent=False)  # (N, D); a parameter where keys are learned
        self.register_buffer("cache_values", None, persistent=False)  # (N, C) one-hot labels

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        return self.base_text

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        zero_shot = super().logits(image_features, text_features)
        if self.cache_keys is None or self.cache_values is None:
            return zero_shot
        return zero_shot + self.config.alpha * cache_logits(
            image_features, self.cache_keys, self.cache_values, self.config.beta
        )

    def on_fit_start(self, frozen_features: Callable[[], Tensor], labels: Tensor) -> None:
        """Build the cache from the training items' frozen features (N, D) and labels (N,)."""
        features = frozen_features().to(self.backbone.device).float()
        num_classes = len(self.classnames)
        if labels.min() < 0 or labels.max() >= num_classes:
            fail("Tip-Adapter's training labels", f"class indices in [0, {num_classes})", labels.unique().tolist())
        values = F.one_hot(labels.to(features.device), num_classes).float()
        self._set_cache(features, values)

    def _set_cache(self, keys: Tensor, values: Tensor) -> None:
        """Install the cache; keys already in place (the optimizer holds them) are overwritten in place."""
        if keys.ndim != 2 or keys.shape[1] != self.backbone.embed_dim:
            fail("Tip-Adapter's cache keys", f"of shape (N, {self.backbone.embed_dim})", tuple(keys.shape))
        if values.shape != (keys.shape[0], len(self.classnames)):
            fail(
                "Tip-Adapter's cache values", f"of shape ({keys.shape[0]}, {len(self.classnames)})", tuple(values.shape)
            )
        device = self.backbone.device
        if self.cache_keys is not None and self.cache_keys.shape == keys.shape:
            with torch.no_grad():
                self.cache_keys.copy_(keys)
        elif self.learn_keys:
            self.cache_keys = nn.Parameter(keys.detach().clone().to(device))
        else:
            self.register_buffer("cache_keys", keys.detach().clone().to(device), persistent=False)
        self.register_buffer("cache_values", values.detach().clone().to(device), persistent=False)

    # The cache is what the method learned: saved and restored with the (trainable) weights.
    def trainable_state_dict(self) -> dict[str, Tensor]:
        if self.cache_keys is None or self.cache_values is None:
            return {}
        return {name: getattr(self, name).detach().clone().contiguous() for name in _CACHE}

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        if set(state) != set(_CACHE):
            fail("Tip-Adapter weights", f"the tensors {list(_CACHE)}", sorted(state))
        self._set_cache(state["cache_keys"].float(), state["cache_values"].float())


@register_method("tip_adapter_f")
class TipAdapterF(TipAdapter):
    """Tip-Adapter whose cache keys are learned (initialised to the training features)."""

    learn_keys = True
