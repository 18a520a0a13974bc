"""Proximity of an image to the base validation images: how crowded its neighbourhood in feature space is.

ProCal (Xiong et al., NeurIPS 2023, "Proximity-informed calibration") and PIECE measure it as
``proximity = exp(-mean of the K smallest Euclidean distances)`` from an image's features to the image features of
the few-shot base validation split, K = 5 as in the DAC repository's default (its comment suggests 10 for ImageNet).
A validation image's own proximity leaves itself out (its K nearest *other* validation images), so that the
calibrators see the same kind of value on the split they are fitted on as on test images.

The features are whatever the caller passes (the run passes the L2-normalised image features behind its logits);
distances are taken in the features' precision (at least float32), their means and the proximity in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from calprompt._validation import check_positive_int, fail
from calprompt.metrics.checks import ArrayLike, check_matrix

#: K, the number of nearest validation images whose mean distance defines proximity (the DAC repository's default).
PROXIMITY_NEIGHBOURS = 5


def _working_precision(features: Tensor) -> Tensor:
    """Distances in the features' own precision, at least float32 (a run's float32 features: as fast as the public
    code, which takes them in float32; float64 input stays exact)."""
    return features if features.dtype == torch.float64 else features.to(torch.float32)


def knn_mean_distance(features: ArrayLike, reference: ArrayLike, k: int = PROXIMITY_NEIGHBOURS) -> Tensor:
    """Float64 mean of the ``k`` smallest Euclidean distances (N,) from each row of ``features`` (N, D) to the rows
    of ``reference`` (M, D); needs ``k <= M``."""
    features = _working_precision(check_matrix(features, "features", "(N, D)"))
    reference = check_matrix(reference, "reference", "(M, D)").to(device=features.device, dtype=features.dtype)
    check_positive_int(k, "k")
    if reference.shape[1] != features.shape[1]:
        fail("reference", f"features of dimension {features.shape[1]}", f"dimension {reference.shape[1]}")
    if k > reference.shape[0]:
        fail("k", f"at most the {reference.shape[0]} reference images; lower `k`", k)
    return torch.cdist(features, reference).topk(k, dim=1, largest=False).values.to(torch.float64).mean(dim=1)


def proximity(features: ArrayLike, reference: ArrayLike, k: int = PROXIMITY_NEIGHBOURS) -> Tensor:
    """``exp(-knn_mean_distance(features, reference, k))`` (N,), in (0, 1]: 1 for an image among its neighbours."""
    return torch.exp(-knn_mean_distance(features, reference, k))


def self_proximity(reference: ArrayLike, k: int = PROXIMITY_NEIGHBOURS) -> Tensor:
    """The proximity (M,) of each reference image to the *other* reference images (itself left out); ``k < M``."""
    reference = _working_precision(check_matrix(reference, "reference", "(M, D)"))
    if k >= reference.shape[0]:
        fail("k", f"below the {reference.shape[0]} reference images (each leaves itself out); lower `k`", k)
    distances = torch.cdist(reference, reference)  # (M, M)
    # The k + 1 smallest include the image itself (distance 0, or a duplicate's 0): drop the smallest.
    nearest = distances.topk(k + 1, dim=1, largest=False).values[:, 1:].to(torch.float64)
    return torch.exp(-nearest.mean(dim=1))


def neighbours_available(n_reference: int, k: int = PROXIMITY_NEIGHBOURS) -> int:
    """The K a split of ``n_reference`` validation images allows (each leaves itself out): ``min(k, n - 1)``."""
    return min(k, n_reference - 1)


@dataclass(frozen=True)
class Proximities:
    """A run's proximity reference: the base validation images' features, the K they allow and their own
    leave-one-out proximity, so that every split's proximity is measured against the same images, once."""

    reference: Tensor | None  # (M, D) validation image features, or None without (enough) validation images
    k: int
    fitting: Tensor | None  # (M,) the validation images' leave-one-out proximity (what calibrators are fitted on)

    @classmethod
    def of(cls, val_features: Tensor | None) -> Proximities:
        if val_features is None or val_features.shape[0] < 2:
            return cls(None, 0, None)
        k = neighbours_available(val_features.shape[0])
        return cls(val_features, k, self_proximity(val_features, k))

    def of_features(self, features: Tensor | None) -> Tensor | None:
        """The proximity (N,) of images with these features (None without a reference or features)."""
        if self.reference is None or features is None:
            return None
        return proximity(features, self.reference, self.k)

    def notes(self) -> dict[str, Any]:
        """What ``metrics.json`` records: K, and an ``adapted`` note when the validation split is too small for it."""
        if self.reference is None:
            return {"skipped": {"proximity": "fewer than 2 validation images: no proximity (ProCal, PIECE)"}}
        out: dict[str, Any] = {"proximity_k": self.k}
        if self.k < PROXIMITY_NEIGHBOURS:
            out["adapted"] = {
                "proximity_k": f"kNN proximity's K lowered from {PROXIMITY_NEIGHBOURS} to {self.k} "
                f"(the {self.reference.shape[0]} validation images less the image itself)"
            }
        return out
