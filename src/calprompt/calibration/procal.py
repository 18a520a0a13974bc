"""ProCal (Xiong et al., NeurIPS 2023, "Proximity-informed calibration"): the two calibrators of its code, as the DAC
repository (ml-stat-Sustech/CLIP_Calibration, ``trainers/calibration/``) uses them.

Both take, besides the logits, each image's ``proximity`` (:mod:`calprompt.calibration.proximity`): they are
fitted on the few-shot base validation split with its leave-one-out proximity, and applied to test images with
their proximity to that split.

- :class:`DensityRatioCalibration` (its "scaling-based" variant): two Gaussian kernel density estimates over
  (top-label confidence, proximity), one of the correctly and one of the wrongly classified validation images;
  Bayes' rule turns them into the probability of being correct.
- :class:`ProximityIsotonicRegression` (its "bin-based" variant, ``BinMeanShift``): validation images are split
  into quantile bins of proximity (5, as ``vl_calibrator.py`` builds it) and a multi-class isotonic regression
  (:class:`~calprompt.calibration.recalibration.MultiIsotonicRegression`) is fitted per bin.

Where the public pipeline (``vl_calibrator.py``) hands the bin-based calibrator softmax *probabilities*, which it
then passes through a softmax a second time, calprompt passes logits: the input its classes and Mix-n-Match are
written for. ``predict_proba`` gives the public code's probabilities; ``transform`` their log, for the metrics.
"""

from __future__ import annotations

import math
from typing import ClassVar, Self

import torch
from torch import Tensor

from calprompt._validation import check_positive_int, fail
from calprompt.calibration.posthoc import _require_fitted
from calprompt.calibration.recalibration import MultiIsotonicRegression, _top_label, replace_top_confidence
from calprompt.metrics.binning import bin_by_edges, quantile_bin_edges
from calprompt.metrics.checks import ArrayLike, as_tensor, check_labels, check_logits

#: Proximity bins of the bin-based variant (``proximity_bin = 5`` in the DAC repository's ``vl_calibrator.py``).
PROXIMITY_BINS = 5


def _proximity(value: ArrayLike, n: int, device: torch.device) -> Tensor:
    tensor = as_tensor(value, "proximity")
    if tensor.ndim != 1 or tensor.shape[0] != n:
        fail("proximity", f"a 1-D array of {n} values (one per row of the logits)", f"shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        fail("proximity", "finite values", "NaN or inf")
    return tensor.to(device=device, dtype=torch.float64)


def normal_reference_bandwidth(points: Tensor) -> Tensor:
    """Scott's rule per dimension, ``1.06 * std * n ** (-1 / (4 + d))`` (population std): statsmodels'
    ``KDEMultivariate(bw="normal_reference")``, what the public density-ratio calibrator uses."""
    n, d = points.shape
    return 1.06 * points.std(dim=0, correction=0) * n ** (-1.0 / (4 + d))


# Evaluation points per chunk of the kernel density: a chunk's (m, n) float64 kernel matrix stays below ~64 MiB.
_KDE_CHUNK_ELEMENTS = 1 << 23


def gaussian_kde(points: Tensor, bandwidth: Tensor, at: Tensor) -> Tensor:
    """Product-Gaussian kernel density of ``points`` (n, d) with per-dimension ``bandwidth`` (d,) at ``at`` (m, d):
    ``mean_i prod_d phi((at_d - points_id) / h_d) / h_d``, the product taken as one exponential of the scaled
    squared distance (``|a|^2 + |p|^2 - 2 a.p``: a matrix product, no (m, n, d) intermediate)."""
    n, d = points.shape
    scaled = points / bandwidth  # (n, d)
    squared = scaled.square().sum(dim=1)  # (n,)
    normaliser = n * (2 * math.pi) ** (d / 2) * bandwidth.prod()
    step = max(1, _KDE_CHUNK_ELEMENTS // n)
    out = []
    for start in range(0, at.shape[0], step):
        a = at[start : start + step] / bandwidth  # (m, d)
        distance = (a.square().sum(dim=1, keepdim=True) + squared - 2 * a @ scaled.T).clamp(min=0)  # (m, n)
        out.append(torch.exp(-0.5 * distance).sum(dim=1) / normaliser)
    return torch.cat(out)


def density_ratio_unfit_reason(correct: Tensor, points: Tensor) -> str | None:
    """Why the density-ratio calibrator cannot be fitted on these validation images, or None.

    Each density needs at least two images with some spread in both confidence and proximity (a zero bandwidth is
    no density); the public code would crash or divide by zero.
    """
    for name, mask in (("correctly", correct), ("wrongly", ~correct)):
        group = points[mask]
        if group.shape[0] < 2:
            return f"{group.shape[0]} {name} classified validation image(s): each density needs at least 2"
        if bool((group.std(dim=0, correction=0) == 0).any()):
            return f"the {name} classified validation images all share one confidence or one proximity"
    return None


class DensityRatioCalibration:
    """ProCal's density-ratio calibrator: ``P(correct | confidence c, proximity d)`` by Bayes' rule,

        c' = f_1(c, d) / max(f_1(c, d) + f_0(c, d) * n_0 / n_1, 1e-10)

    with ``f_1`` / ``f_0`` the kernel densities (:func:`gaussian_kde`, :func:`normal_reference_bandwidth`) of the
    ``n_1`` correctly / ``n_0`` wrongly classified validation images. The predicted class gets ``c'`` and the other
    classes share ``1 - c'`` in their original proportions (so top-1 may change when ``c'`` is small).

    Attributes:
        correct_points_, wrong_points_: (n, 2) float64 (confidence, proximity) of each group; after ``fit``.
        correct_bandwidth_, wrong_bandwidth_: (2,) their bandwidths. error_ratio_: ``n_0 / n_1``.
    """

    transfers_to_novel: ClassVar[bool] = True  # a map of (confidence, proximity): no class identity
    preserves_top1: ClassVar[bool] = False

    #: The public code's floor of the denominator.
    EPS = 1e-10

    def fit(self, logits: ArrayLike, labels: ArrayLike, proximity: ArrayLike) -> Self:
        """Fit both densities on validation logits (N, C), labels (N,) and proximity (N,)."""
        _, confidence, correct = _top_label(logits, labels)
        points = torch.stack([confidence, _proximity(proximity, confidence.shape[0], confidence.device)], dim=1)
        correct = correct.bool()
        reason = density_ratio_unfit_reason(correct, points)
        if reason:
            fail("validation split of the density-ratio calibrator", "fit for two densities", reason)
        self.correct_points_, self.wrong_points_ = points[correct], points[~correct]
        self.correct_bandwidth_ = normal_reference_bandwidth(self.correct_points_)
        self.wrong_bandwidth_ = normal_reference_bandwidth(self.wrong_points_)
        self.error_ratio_ = self.wrong_points_.shape[0] / self.correct_points_.shape[0]
        return self

    def calibrated_confidence(self, confidence: Tensor, proximity: Tensor) -> Tensor:
        """``c'`` (N,) for top-label confidences (N,) and proximities (N,)."""
        _require_fitted(self, "correct_points_")
        at = torch.stack([confidence.to(torch.float64), proximity.to(torch.float64)], dim=1)
        dens_correct = gaussian_kde(self.correct_points_.to(at.device), self.correct_bandwidth_.to(at.device), at)
        dens_wrong = gaussian_kde(self.wrong_points_.to(at.device), self.wrong_bandwidth_.to(at.device), at)
        return dens_correct / (dens_correct + dens_wrong * self.error_ratio_).clamp(min=self.EPS)

    def predict_proba(self, logits: ArrayLike, proximity: ArrayLike) -> Tensor:
        """The public code's calibrated probabilities (N, C), float64 (``c'`` on the predicted class)."""
        probs, confidence, _ = _top_label(logits)
        calibrated = self.calibrated_confidence(confidence, _proximity(proximity, probs.shape[0], probs.device))
        prediction = probs.argmax(dim=1, keepdim=True)
        others = probs.scatter(1, prediction, 0.0)
        out = others * ((1 - calibrated) / others.sum(dim=1))[:, None]
        return out.scatter(1, prediction, calibrated[:, None])

    def transform(self, logits: ArrayLike, proximity: ArrayLike) -> Tensor:
        """Log-probabilities (N, C) with ``c'`` kept in ``[1e-6, 1 - 1e-6]`` (finite NLL; see
        :func:`~calprompt.calibration.recalibration.replace_top_confidence`)."""
        probs, confidence, _ = _top_label(logits)
        calibrated = self.calibrated_confidence(confidence, _proximity(proximity, probs.shape[0], probs.device))
        return replace_top_confidence(probs, calibrated)


class ProximityIsotonicRegression:
    """ProCal's bin-based variant over multi-class isotonic regression (the public ``BinMeanShift`` with
    ``MultiIsotonicRegression``, quantile bins): one :class:`MultiIsotonicRegression` per proximity bin.

    The bin edges are the validation proximities' quantiles; a test image is calibrated by the regression of the
    bin its proximity falls in. A bin without validation images (ties at an edge) has no regression of its own: its
    test images use one fitted on the whole validation split (listed in ``empty_bins_``).

    Attributes:
        edges_: (n_bins + 1,) proximity bin edges. calibrators_: one fitted regression per bin (None if empty).
        pooled_: the regression of the whole split (for empty bins). empty_bins_: indices of empty bins.
    """

    transfers_to_novel: ClassVar[bool] = True
    preserves_top1: ClassVar[bool] = False  # each bin's map keeps top-1 as MultiIsotonicRegression does

    def __init__(self, n_bins: int = PROXIMITY_BINS) -> None:
        self.n_bins = check_positive_int(n_bins, "n_bins")

    def fit(self, logits: ArrayLike, labels: ArrayLike, proximity: ArrayLike) -> Self:
        """Fit one regression per proximity bin from validation logits (N, C), labels (N,) and proximity (N,)."""
        logits = check_logits(logits)
        labels = check_labels(labels, logits.shape[0], logits.shape[1], logits.device)
        near = _proximity(proximity, logits.shape[0], logits.device)
        self.edges_ = quantile_bin_edges(near, self.n_bins)
        bins = bin_by_edges(near, self.edges_)
        self.pooled_ = MultiIsotonicRegression().fit(logits, labels)
        self.calibrators_: list[MultiIsotonicRegression | None] = []
        for b in range(self.n_bins):
            rows = torch.nonzero(bins == b).squeeze(1)
            fitted = MultiIsotonicRegression().fit(logits[rows], labels[rows]) if len(rows) else None
            self.calibrators_.append(fitted)
        self.empty_bins_ = [b for b, fitted in enumerate(self.calibrators_) if fitted is None]
        return self

    def predict_proba(self, logits: ArrayLike, proximity: ArrayLike) -> Tensor:
        """Each row's ``g_b(p) + 1e-9 p`` (N, C) with ``b`` its proximity bin (rows not renormalised), float64."""
        _require_fitted(self, "edges_")
        logits = check_logits(logits)
        bins = bin_by_edges(_proximity(proximity, logits.shape[0], logits.device), self.edges_)
        out = torch.empty(logits.shape, dtype=torch.float64, device=logits.device)
        for b in range(self.n_bins):
            rows = torch.nonzero(bins == b).squeeze(1)
            if len(rows):
                out[rows] = (self.calibrators_[b] or self.pooled_).predict_proba(logits[rows])
        return out

    def transform(self, logits: ArrayLike, proximity: ArrayLike) -> Tensor:
        """``log predict_proba`` (N, C): logits whose softmax is the renormalised output."""
        return self.predict_proba(logits, proximity).clamp(min=torch.finfo(torch.float64).tiny).log()
