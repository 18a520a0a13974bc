"""Binned calibration errors: top-label ECE, adaptive (equal-mass) ECE, MCE and classwise ECE.

All take probabilities ``probs`` (N, C) and integer ``labels`` (N,), accept torch tensors or numpy arrays, and return
a 0-d float64 tensor on the input's device holding a **fraction** in [0, 1] (multiply by 100 for the percent the papers
print). The bin-edge convention is documented once, in :mod:`calprompt.metrics.binning`.

Top-label quantities: confidence ``conf_i = max_c p_ic``, prediction ``argmax_c p_ic`` (first index on ties) and
``correct_i = [prediction_i == y_i]``. With bins ``B_b``, ``acc_b`` and ``conf_b`` the bin means:

    ECE = sum_b |B_b| / N * |acc_b - conf_b|                 (Guo et al., 2017; equal-width bins)
    MCE = max over non-empty b of |acc_b - conf_b|           (Naeini et al., 2015; unweighted)
    sample-weighted MCE = max_b |acc_b - conf_b| |B_b| / N   (what the TCPT and DAC evaluators print as "MCE")
    adaptive ECE = the ECE formula over equal-mass bins      (Nixon et al., 2019)
"""

from __future__ import annotations

import torch
from torch import Tensor

from calprompt._validation import check_positive_int
from calprompt.metrics.binning import bin_totals, equal_mass_bin_index, equal_width_bin_index
from calprompt.metrics.checks import ArrayLike, check_labels, check_probs


def checked_probs_labels(probs: ArrayLike, labels: ArrayLike, n_bins: int = 1) -> tuple[Tensor, Tensor]:
    """Validate a (probs, labels, n_bins) triple once, for every probability-based metric."""
    check_positive_int(n_bins, "n_bins")
    probs = check_probs(probs)
    return probs, check_labels(labels, probs.shape[0], probs.shape[1], probs.device)


def top_label(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 confidence (N,) and boolean correctness (N,) of the top-1 prediction."""
    confidence, prediction = probs.max(dim=1)
    return confidence.to(torch.float64), prediction == labels


def true_class_prob(probs: Tensor, labels: Tensor) -> Tensor:
    """The probability ``p_{i, y_i}`` of each sample's true class (N,), in the input dtype."""
    return probs.gather(1, labels[:, None]).squeeze(1)


def top_label_totals(confidence: Tensor, correct: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width bin: (count, sum of confidence, number correct), each float64 (n_bins,)."""
    return bin_totals(equal_width_bin_index(confidence, n_bins), confidence, correct, n_bins)


def ece_from_totals(count: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> Tensor:
    """ECE from per-bin totals: ``sum_b |B_b|/N |acc_b - conf_b| = sum_b |hits_b - conf_sum_b| / N``."""
    return (correct_sum - confidence_sum).abs().sum() / count.sum()


def mce_from_totals(count: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> Tensor:
    """MCE from per-bin totals; empty bins have gap 0, so the max over all bins equals the max over non-empty ones."""
    return ((correct_sum - confidence_sum).abs() / count.clamp(min=1)).max()


def sample_weighted_mce_from_totals(count: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> Tensor:
    """``max_b |acc_b - conf_b| |B_b| / N = max_b |hits_b - conf_sum_b| / N`` (empty bins contribute 0)."""
    return (correct_sum - confidence_sum).abs().max() / count.sum()


def adaptive_ece_from_top_label(confidence: Tensor, correct: Tensor, n_bins: int) -> Tensor:
    """Adaptive ECE from top-label confidence and correctness (equal-mass bins)."""
    totals = bin_totals(equal_mass_bin_index(confidence, n_bins), confidence, correct, n_bins)
    return ece_from_totals(*totals)


def classwise_bin_sums(probs: Tensor, labels: Tensor, n_bins: int) -> tuple[Tensor, Tensor]:
    """Per class c and bin b: the sum of p_ic over samples whose p_ic falls in b, and the count of those with y_i = c.

    Both (C, n_bins) float64, additive over row chunks. Most of the N x C probabilities of a many-class problem sit in
    the first bin, so only the entries above half the first edge are binned one by one (fewer than ``2 n_bins`` per
    row, since rows sum to 1); the rest of each column joins bin 0 through the column total.
    """
    n_classes = probs.shape[1]
    # The half-edge threshold keeps every entry that might leave bin 0, whatever the dtype.
    rows, cols = torch.nonzero(probs > 0.5 / n_bins, as_tuple=True)
    values = probs[rows, cols].to(torch.float64)
    flat = cols * n_bins + equal_width_bin_index(values, n_bins)
    # .to(float64): with no entry above the threshold (near-uniform rows) bincount returns int64 zeros.
    prob_sum = torch.bincount(flat, weights=values, minlength=n_classes * n_bins).view(n_classes, n_bins)
    prob_sum = prob_sum.to(torch.float64)
    binned_total = prob_sum.sum(dim=1)
    prob_sum[:, 0] += probs.sum(dim=0, dtype=torch.float64) - binned_total
    # The indicator [y_i = c] is 1 only at (i, y_i): bin those N entries for the label frequencies.
    hit_ids = labels * n_bins + equal_width_bin_index(true_class_prob(probs, labels), n_bins)
    hits = torch.bincount(hit_ids, minlength=n_classes * n_bins).view(n_classes, n_bins).to(torch.float64)
    return prob_sum, hits


def classwise_ece_from_sums(prob_sum: Tensor, hits: Tensor, n: int) -> Tensor:
    """Classwise ECE from :func:`classwise_bin_sums` over ``n`` samples.

    Per class c and bin b, ``|B_cb| |freq_cb - mean p_cb|`` equals ``|hits_cb - sum p_cb|``, so bin counts are
    never needed.
    """
    return ((hits - prob_sum).abs().sum(dim=1) / n).mean()


def classwise_ece_from_checked(probs: Tensor, labels: Tensor, n_bins: int) -> Tensor:
    """Classwise ECE of already validated inputs (see :func:`classwise_calibration_error`)."""
    return classwise_ece_from_sums(*classwise_bin_sums(probs, labels, n_bins), probs.shape[0])


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> Tensor:
    """Top-label ECE over ``n_bins`` equal-width bins, as a fraction in [0, 1].

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]], dtype=torch.float64)
        >>> float(expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=10))
        0.35
    """
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    return ece_from_totals(*top_label_totals(*top_label(probs, labels), n_bins))


def maximum_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> Tensor:
    """Top-label MCE: the largest unweighted |accuracy - confidence| over non-empty equal-width bins (fraction)."""
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    return mce_from_totals(*top_label_totals(*top_label(probs, labels), n_bins))


def sample_weighted_maximum_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> Tensor:
    """The largest bin gap weighted by the bin's share of samples, ``max_b |acc_b - conf_b| |B_b| / N`` (fraction).

    The "MCE" of the TCPT and DAC evaluators: not the usual MCE (:func:`maximum_calibration_error`), which does not
    weight; a bin with a few badly calibrated samples barely moves it.
    """
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    return sample_weighted_mce_from_totals(*top_label_totals(*top_label(probs, labels), n_bins))


def adaptive_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> Tensor:
    """Adaptive (equal-mass) top-label ECE of Nixon et al. (2019), as a fraction in [0, 1].

    Bins hold equal numbers of samples (sizes differ by at most one; see :mod:`calprompt.metrics.binning`). This is
    not netcal's "ACE", which averages bins without weighting.
    """
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    return adaptive_ece_from_top_label(*top_label(probs, labels), n_bins)


def classwise_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> Tensor:
    """Classwise ECE (Kull et al., 2019, "Beyond temperature scaling"), as a fraction in [0, 1].

    For each class ``c``, bin every sample's ``p_ic`` into equal-width bins ``B_cb``; the class error is
    ``sum_b |B_cb| / N * |freq_cb - mean p_cb|`` with ``freq_cb`` the fraction of the bin whose label is ``c``.
    The result is the unweighted mean over the C classes.
    """
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    return classwise_ece_from_checked(probs, labels, n_bins)
