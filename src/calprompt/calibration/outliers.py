"""DOR's pieces (ICML 2025; public code: ml-stat-Sustech/Outlier-Calibration): the outlier text regularizer, the
choice of outlier class names and the per-step sampler.

DOR keeps the tuned prompts from distorting the text space away from the base classes: at every step it encodes a
batch of *outlier* class names (nouns that are not among the dataset's classes) with the tuned prompts and pulls
each towards the frozen zero-shot CLIP text feature of the same name:

    dor_loss = 1 - mean_b cos(t'(o_b), t(o_b))

The candidate names are the shipped WordNet nouns (:mod:`calprompt.calibration.nouns`) minus the dataset's class
names, ranked by their mean zero-shot cosine similarity to the base classes; the ``top_k`` = 5000 most similar are
kept (the outliers that matter are the ones near the task), and every step draws a batch from them with a generator
seeded by ``(seed, epoch, step)``, so a resumed run draws the same batches. The weight is the ``dor`` preset's
constant, which follows the method (``build_objective("dor", method=...)``): 8 for CoOp, 2 for the other methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import check_int, check_positive_int, fail
from calprompt.calibration._common import full_precision, upcast
from calprompt.calibration.registry import register_term
from calprompt.data.views import stable_seed

if TYPE_CHECKING:
    from calprompt.clip import ClipBackbone

#: How many of the most base-like candidate names DOR keeps.
DEFAULT_TOP_K = 5000


@register_term("dor_loss", needs=("outlier_text_features", "zs_outlier_text_features"))
@full_precision
def dor_loss(tuned_outlier_text: Tensor, frozen_outlier_text: Tensor) -> Tensor:
    """``1 - mean_b cos(t'(o_b), t(o_b))`` over (K, D) tuned and frozen text features of the same K outlier names."""
    for tensor, name in ((tuned_outlier_text, "tuned_outlier_text"), (frozen_outlier_text, "frozen_outlier_text")):
        if not isinstance(tensor, Tensor) or tensor.ndim != 2 or not tensor.is_floating_point() or not tensor.shape[0]:
            got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            fail(name, "a non-empty floating-point tensor of shape (outliers, dim)", got)
    if tuned_outlier_text.shape != frozen_outlier_text.shape:
        fail("frozen_outlier_text", f"of shape {tuple(tuned_outlier_text.shape)}", tuple(frozen_outlier_text.shape))
    tuned, frozen = upcast(tuned_outlier_text, frozen_outlier_text)
    return 1 - F.cosine_similarity(tuned, frozen, dim=1).mean()


def normalise_name(name: str) -> str:
    """Lowercase, underscores as spaces, single spaces: how class names and nouns are compared."""
    return " ".join(name.replace("_", " ").lower().split())


def candidate_names(nouns: Iterable[str], classnames: Iterable[str]) -> list[str]:
    """The nouns that are none of the dataset's class names (compared after :func:`normalise_name`), in order."""
    excluded = {normalise_name(name) for name in classnames}
    return [noun for noun in nouns if normalise_name(noun) not in excluded]


def rank_by_base_similarity(
    candidate_features: Tensor, base_features: Tensor, names: Sequence[str], top_k: int = DEFAULT_TOP_K
) -> list[str]:
    """The ``top_k`` names whose (K, D) zero-shot features have the highest mean cosine to the (C, D) base classes.

    Ties keep the candidates' order (stable sort), so the result is deterministic.
    """
    check_positive_int(top_k, "top_k")
    if candidate_features.shape[0] != len(names):
        fail("names", f"one name per candidate feature row ({candidate_features.shape[0]})", len(names))
    similarity = F.normalize(candidate_features.double(), dim=1) @ F.normalize(base_features.double(), dim=1).T
    order = torch.sort(similarity.mean(dim=1), descending=True, stable=True).indices[:top_k]
    return [names[i] for i in order.tolist()]


def select_outliers(
    encode: Callable[[Sequence[str]], Tensor],
    nouns: Iterable[str],
    classnames: Sequence[str],
    base_features: Tensor,
    top_k: int = DEFAULT_TOP_K,
) -> list[str]:
    """DOR's outlier names for a dataset: ``nouns`` minus ``classnames``, ranked against the base classes.

    ``encode(names)`` returns the frozen zero-shot text features (K, D) of names (e.g. ``partial(
    zero_shot_text_features, backbone, templates=template)``); ``base_features`` are those of the base classes.
    """
    names = candidate_names(nouns, classnames)
    if not names:
        fail("nouns", "at least one noun that is not a class name", 0)
    return rank_by_base_similarity(encode(names), base_features, names, top_k)


#: Outlier names drawn per training step.
DEFAULT_OUTLIER_BATCH = 32


@dataclass(frozen=True)
class OutlierPool:
    """DOR's outlier class names and their frozen zero-shot text features (K, D), computed once per run."""

    names: tuple[str, ...]
    features: Tensor
    batch_size: int = DEFAULT_OUTLIER_BATCH

    def __post_init__(self) -> None:
        if not self.names or self.features.shape[0] != len(self.names):
            fail("OutlierPool", "one feature row per (at least one) name", (len(self.names), self.features.shape))

    def sampler(self, seed: int) -> OutlierSampler:
        return OutlierSampler(len(self.names), min(self.batch_size, len(self.names)), seed)


class OutlierSampler:
    """Draws ``batch_size`` distinct outlier indices per training step, seeded by ``(seed, epoch, step)``.

    The draw depends only on those three numbers, never on earlier draws, so resuming at any step reproduces it.
    """

    def __init__(self, n_outliers: int, batch_size: int, seed: int) -> None:
        self.n_outliers = check_positive_int(n_outliers, "n_outliers")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > n_outliers:
            fail("batch_size", f"at most the number of outliers ({n_outliers})", batch_size)
        self.seed = check_int(seed, "seed")

    def indices(self, epoch: int, step: int) -> Tensor:
        """int64 (batch_size,) distinct indices into the outlier list for this step."""
        generator = torch.Generator().manual_seed(stable_seed("dor", self.seed, epoch, step))
        return torch.randperm(self.n_outliers, generator=generator)[: self.batch_size]


def outlier_pool(
    backbone: ClipBackbone, classnames: Sequence[str], template: str, base_features: Tensor
) -> OutlierPool:
    """DOR's outliers for a dataset: the shipped WordNet nouns that are none of its classes and that the backbone's
    vocabulary can spell (the toy CLIP knows only its world's words), the 5000 closest to the base classes."""
    from calprompt.calibration.nouns import wordnet_nouns
    from calprompt.clip.zeroshot import zero_shot_text_features

    covers = getattr(backbone.tokenizer, "covers", None)
    nouns = [noun for noun in wordnet_nouns() if covers is None or covers(noun)]

    encoded: dict[str, Tensor] = {}  # the candidates' features, kept for the chosen names (one text pass)

    def encode(names: Sequence[str]) -> Tensor:
        features = zero_shot_text_features(backbone, names, template)
        encoded.update(zip(names, features, strict=True))
        return features

    names = select_outliers(encode, nouns, classnames, base_features)
    return OutlierPool(tuple(names), torch.stack([encoded[name] for name in names]))
