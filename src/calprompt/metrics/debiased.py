"""Binned ECE estimators with less bias than the plug-in ECE (Roelofs et al., AISTATS 2022, "Mitigating bias in
calibration error estimation").

The plug-in ECE ``sum_b |B_b|/N |acc_b - conf_b|`` overestimates the true calibration error, most of all for
well-calibrated models: the absolute value turns the sampling noise of each bin's accuracy into a positive bias.

- **Debiased ECE** (Kumar et al., NeurIPS 2019, "Verified uncertainty calibration"; the ``ECE_debias`` of Roelofs et
  al.): subtract the plug-in's own bias, estimated by treating each bin's accuracy as Gaussian with its binomial
  variance, ``a_b ~ N(acc_b, acc_b (1 - acc_b) / |B_b|)``:
  ``ECE_debiased = 2 ECE - sum_b |B_b|/N E|a_b - conf_b|``. Kumar et al. average the expectation over random draws;
  here it is taken in closed form, ``E|X| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m erf(m / (s sqrt 2))`` for
  ``X ~ N(m, s^2)``, the limit of their estimator with infinitely many draws (deterministic, no seed). It is computed
  on the same equal-width bins as ECE, so the two are directly comparable, and may be slightly negative.
- **ECE_sweep** (Roelofs et al.): the equal-mass ECE with the largest number of bins ``b`` for which the bin
  accuracies are still monotonically non-decreasing in confidence (bins sized as ``numpy.array_split`` of the
  confidence-sorted samples, stable order, as in :mod:`calprompt.metrics.binning`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from calprompt.metrics.calibration import checked_probs_labels, top_label, top_label_totals
from calprompt.metrics.checks import ArrayLike


def expected_abs_normal(mean: Tensor, std: Tensor) -> Tensor:
    """``E|X|`` for ``X ~ N(mean, std^2)``, elementwise; ``|mean|`` where ``std`` is 0."""
    safe = torch.where(std > 0, std, torch.ones_like(std))
    folded = safe * math.sqrt(2 / math.pi) * torch.exp(-(mean**2) / (2 * safe**2)) + mean * torch.erf(
        mean / (safe * math.sqrt(2))
    )
    return torch.where(std > 0, folded, mean.abs())


def debiased_ece_from_totals(count: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> Tensor:
    """Debiased ECE from per-bin (count, sum of confidence, number correct) totals (see the module docstring)."""
    filled = count > 0
    n_b = count[filled]
    accuracy, confidence = correct_sum[filled] / n_b, confidence_sum[filled] / n_b
    gap = accuracy - confidence
    std = (accuracy * (1 - accuracy) / n_b).clamp(min=0).sqrt()
    weight = n_b / count.sum()
    plug_in = (weight * gap.abs()).sum()
    return 2 * plug_in - (weight * expected_abs_normal(gap, std)).sum()


def _equal_mass_ends(n: int, n_bins: Tensor, upto: int) -> Tensor:
    """Exclusive end positions (K, upto) of ``numpy.array_split``-sized bins over ``n`` sorted samples, for each of
    the (K,) bin counts; positions past a row's last bin are ``n``."""
    j = torch.arange(1, upto + 1, device=n_bins.device)  # (upto,)
    small, extra = (n // n_bins)[:, None], (n % n_bins)[:, None]  # (K, 1): the first `extra` bins hold one more
    ends = j * small + torch.minimum(j, extra)  # (K, upto)
    return torch.where(j <= n_bins[:, None], ends, n)


def _bin_sums(cumulative: Tensor, ends: Tensor) -> Tensor:
    """Per-bin sums (K, upto) of the sorted values whose cumulative sums (N + 1,) are given."""
    starts = torch.cat([ends.new_zeros(ends.shape[0], 1), ends[:, :-1]], dim=1)
    return cumulative[ends] - cumulative[starts]


# Candidate bin counts are tested in blocks of at most this many (K x upto) entries.
_SWEEP_BLOCK = 1 << 18


def ece_sweep_from_top_label(confidence: Tensor, correct: Tensor) -> tuple[Tensor, int]:
    """ECE_sweep and the number of equal-mass bins it settled on (see the module docstring).

    Bin counts 2, 3, ... are tried in vectorised blocks until the first whose accuracies are not monotone; the
    answer is the count before it. A correctness sequence that is itself non-decreasing in confidence is monotone
    for every count, so it goes straight to ``N`` singleton bins.
    """
    n = confidence.shape[0]
    order = torch.sort(confidence, stable=True).indices
    hits_sorted = correct[order].to(torch.float64)
    zero = hits_sorted.new_zeros(1)
    conf_cum = torch.cat([zero, torch.cumsum(confidence[order].to(torch.float64), 0)])  # (N + 1,)
    hit_cum = torch.cat([zero, torch.cumsum(hits_sorted, 0)])
    if bool((torch.diff(hits_sorted) >= 0).all()):
        best = n
    else:
        best, low, block = 1, 2, 8
        while best == low - 1 and low <= n:
            high = min(n, low + block - 1)  # try bin counts low..high at once, (K, high) entries
            counts = torch.arange(low, high + 1, device=confidence.device)  # (K,)
            ends = _equal_mass_ends(n, counts, high)
            sizes = _bin_sums(torch.arange(n + 1, device=confidence.device, dtype=torch.float64), ends)
            accuracy = _bin_sums(hit_cum, ends) / sizes.clamp(min=1)
            inside = torch.arange(2, high + 1, device=confidence.device) <= counts[:, None]  # (K, high - 1)
            monotone = ((accuracy[:, 1:] >= accuracy[:, :-1]) | ~inside).all(dim=1)
            failing = torch.nonzero(~monotone)
            best = int(counts[failing[0, 0]]) - 1 if failing.numel() else high
            low, block = high + 1, max(1, min(2 * block, _SWEEP_BLOCK // (2 * high)))
    ends = _equal_mass_ends(n, torch.tensor([best], device=confidence.device), best)
    return (_bin_sums(hit_cum, ends) - _bin_sums(conf_cum, ends)).abs().sum() / n, best


def debiased_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> Tensor:
    """Debiased top-label ECE over ``n_bins`` equal-width bins (Kumar et al., 2019), as a fraction."""
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    return debiased_ece_from_totals(*top_label_totals(*top_label(probs, labels), n_bins))


def sweep_calibration_error(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """ECE_sweep (Roelofs et al., 2022): equal-mass ECE at the largest monotone number of bins, as a fraction."""
    probs, labels = checked_probs_labels(probs, labels)
    return ece_sweep_from_top_label(*top_label(probs, labels))[0]
