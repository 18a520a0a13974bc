"""Binned calibration errors: top-label ECE, adaptive (equal-mass) ECE, MCE and classwise ECE.

All take probabilities ``probs`` (N, C) and integer ``labels`` (N,), accept torch tensors or numpy arrays, and return
a 0-d float64 tensor on the input's device holding a **fraction** in [0, 1] (multiply by 100 for the percent the papers
print). The bin-edge convention is documented once, in :mod:`calprompt.metrics.binning`.

Top-label quantities: confidence ``conf_i = max_c p_ic``, prediction ``argmax_c p_ic`` (first index on ties) and
``correct_i = [prediction_i == y_i]``. With bins ``B_b``, ``acc_b`` and ``conf_b`` the bin means:

    ECE = sum_b |B_b| / N * |acc_b - conf_b|                 (Guo et al., 2017; equal-width bins)
    MCE = max over non-empty b of |acc_b - conf_b|           (Naeini et al., 2015; unweighted)
    adaptive ECE = the ECE formula over equal-mass bins      (Nixon et al., 2019)
"""

from __future__ import annotations

import torch
from torch import Tensor

from calprompt._validation import check_positive_int
from calprompt.metrics.binning import bin_totals, equal_mass_bin_index, equal_width_bin_index
from calprompt.metrics.checks import ArrayLike, check_labels, check_probs

# Classwise ECE bins the whole (N, C) matrix; it does so in column blocks of at most this many entries to bound memory.
_CLASSWISE_BLOCK = 1 << 23


def checked_probs_labels(probs: ArrayLike, labels: ArrayLike, n_bins: int = 1) -> tuple[Tensor, Tensor]:
    """Validate a (probs, labels, n_bins) triple once, for every probability-based metric."""
    check_positive_int(n_bins, "n_bins")
    probs = check_probs(probs)
    return probs, check_labels(labels, probs.shape[0], probs.shape[1], probs.device)


def top_label(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 confidence (N,) and boolean correctness (N,) of the top-1 prediction."""
    confidence, prediction = probs.max(dim=1)
    return confidence.to(torch.float64), prediction == labels


def top_label_totals(confidence: Tensor, correct: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width bin: (count, sum of confidence, number correct), each float64 (n_bins,)."""
    return bin_totals(equal_width_bin_index(confidence, n_bins), confidence, correct, n_bins)


def ece_from_totals(count: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> Tensor:
    """ECE from per-bin totals: ``sum_b |B_b|/N |acc_b - conf_b| = sum_b |hits_b - conf_sum_b| / N``."""
    return (correct_sum - confidence_sum).abs().sum() / count.sum()


def mce_from_totals(count: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> Tensor:
    """MCE from per-bin totals; empty bins have gap 0, so the max over all bins equals the max over non-empty ones."""
    return ((correct_sum - confidence_sum).abs() / count.clamp(min=1)).max()


def adaptive_ece_from_top_label(confidence: Tensor, correct: Tensor, n_bins: int) -> Tensor:
    """Adaptive ECE from top-label confidence and correctness (equal-mass bins)."""
    totals = bin_totals(equal_mass_bin_index(confidence, n_bins), confidence, correct, n_bins)
    return ece_from_totals(*totals)


def classwise_ece_from_checked(probs: Tensor, labels: Tensor, n_bins: int) -> Tensor:
    """Classwise ECE of already validated inputs (see :func:`classwise_calibration_error`)."""
    n, n_classes = probs.shape
    block = max(1, _CLASSWISE_BLOCK // n)
    per_class = []
    for start in range(0, n_classes, block):
        stop = min(start + block, n_classes)
        chunk = probs[:, start:stop].to(torch.float64).contiguous()  # (N, m)
        width = stop - start
        # One flat bin id per (class, bin) pair: class j of the block owns ids [j * n_bins, (j + 1) * n_bins).
        flat = equal_width_bin_index(chunk, n_bins) + n_bins * torch.arange(width, device=probs.device)  # (N, m)
        count_and_sum = width * n_bins
        prob_sum = torch.bincount(flat.flatten(), weights=chunk.flatten(), minlength=count_and_sum)
        # The indicator [y_i == c] is 1 only at (i, y_i): only those entries contribute to the per-bin label frequency.
        in_block = (labels >= start) & (labels < stop)
        rows = torch.nonzero(in_block).squeeze(1)
        hit_ids = flat[rows, labels[rows] - start]
        hit_sum = torch.bincount(hit_ids, minlength=count_and_sum).to(torch.float64)
        per_class.append((hit_sum - prob_sum).abs().view(width, n_bins).sum(dim=1) / n)
    return torch.cat(per_class).mean()


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
