"""Percentile bootstrap intervals for accuracy, ECE, smooth ECE, NLL and Brier, vectorised over resamples.

A resample of the N evaluated samples is represented by its multinomial counts ``w`` (N,) (how often each sample was
drawn, summing to N), so every statistic is a weighted statistic of the original per-sample values: accuracy, NLL and
Brier are ``w @ values / N``; ECE's per-bin residual sums are ``w @ (onehot(bin) * (correct - confidence))``; smooth
ECE runs its kernel smoother on the weights (:mod:`calprompt.metrics.smooth`), each resample with its own bandwidth.
Resamples are processed a block of rows at a time (``(block, N)`` float64 counts, about 64 MiB), so memory stays
bounded whatever the number of resamples, and no Python loop runs over resamples.

The resamples come from a ``torch.Generator`` seeded with ``seed`` on the data's device, in a fixed block layout, so
a (data, seed, n_resamples) triple always gives the same intervals on the same device. The interval at ``level`` is
the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled values (linear interpolation, as
``numpy.quantile``): Efron's percentile interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import check_positive_int, fail
from calprompt.metrics.binning import equal_width_bin_index
from calprompt.metrics.calibration import checked_probs_labels, top_label
from calprompt.metrics.checks import ArrayLike
from calprompt.metrics.classification import brier_per_sample, true_log_prob_from_probs
from calprompt.metrics.smooth import smooth_ece_from_top_label, smooth_reliability_curve

#: The statistics that get intervals, in this order.
BOOTSTRAP_STATISTICS: tuple[str, ...] = ("accuracy", "ece", "smooth_ece", "nll", "brier")

# Count entries per block of resamples: at most 2^23 float64 values (64 MiB) and 256 rows (which bounds the FFT
# buffers of the smooth ECE for small N).
_BLOCK_ELEMENTS = 1 << 23
_BLOCK_ROWS = 256


def check_level(level: object, name: str = "level") -> float:
    """Return a confidence level strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        fail(name, "a confidence level strictly between 0 and 1 (e.g. 0.95)", level)
    return float(level)


def resample_counts(n: int, n_resamples: int, seed: int, device: torch.device) -> Iterator[Tensor]:
    """Yield float64 (block, n) multinomial counts, ``n_resamples`` rows in all, from one seeded generator."""
    generator = torch.Generator(device=device).manual_seed(seed)
    block = max(1, min(_BLOCK_ROWS, _BLOCK_ELEMENTS // n))
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        drawn = torch.randint(0, n, (rows, n), generator=generator, device=device)  # (rows, n) sample indices
        counts = torch.zeros(rows, n, dtype=torch.float64, device=device)
        yield counts.scatter_add_(1, drawn, torch.ones(1, 1, dtype=torch.float64, device=device).expand(rows, n))


@dataclass(frozen=True)
class TopLabelSample:
    """Per-sample values every bootstrapped statistic is a weighted function of (each (N,), float64)."""

    confidence: Tensor
    correct: Tensor
    nll: Tensor  # -log p_{i, y_i}
    brier: Tensor  # sum_c (p_ic - [y_i = c])^2


def check_statistics(statistics: object) -> tuple[str, ...]:
    """Return a non-empty tuple of names from :data:`BOOTSTRAP_STATISTICS`."""
    if isinstance(statistics, str) or not statistics or any(s not in BOOTSTRAP_STATISTICS for s in statistics):
        fail("statistics", f"a non-empty sequence of names among {BOOTSTRAP_STATISTICS}", statistics)
    return tuple(statistics)


def resampled_statistics(
    sample: TopLabelSample,
    n_resamples: int,
    seed: int,
    n_bins: int,
    curve_bandwidth: float | None = None,
    statistics: tuple[str, ...] = BOOTSTRAP_STATISTICS,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """The ``statistics`` on every resample ((n_resamples,) each), and optionally the smoothed reliability curves
    (n_resamples, M) at the fixed ``curve_bandwidth``. Smooth ECE costs most (a bandwidth search per resample);
    the others are one matrix product per block."""
    confidence, correct = sample.confidence, sample.correct.to(torch.float64)
    n = confidence.shape[0]
    bins = F.one_hot(equal_width_bin_index(confidence, n_bins), n_bins).to(torch.float64)  # (N, n_bins)
    # One matrix product gives every additive statistic: columns correct, nll, brier, then the binned residuals.
    columns = torch.cat(
        [torch.stack([correct, sample.nll, sample.brier], 1), bins * (correct - confidence)[:, None]], 1
    )
    parts: dict[str, list[Tensor]] = {name: [] for name in statistics}
    curves = []
    for counts in resample_counts(n, n_resamples, seed, confidence.device):
        sums = counts @ columns / n  # (block, 3 + n_bins)
        additive = {"accuracy": sums[:, 0], "nll": sums[:, 1], "brier": sums[:, 2], "ece": sums[:, 3:].abs().sum(1)}
        for name in statistics:
            if name == "smooth_ece":
                parts[name].append(smooth_ece_from_top_label(confidence, correct, counts)[0])
            else:
                parts[name].append(additive[name])
        if curve_bandwidth is not None:
            curves.append(smooth_reliability_curve(confidence, correct, curve_bandwidth, weights=counts).accuracy)
    values = {name: torch.cat(chunks) for name, chunks in parts.items()}
    return values, (torch.cat(curves) if curves else None)


def percentile_interval(values: Tensor, level: float) -> Tensor:
    """The percentile interval ``(lower, upper)`` of resampled ``values`` along dim 0: shape (2, ...)."""
    tail = (1 - level) / 2
    quantiles = torch.tensor([tail, 1 - tail], dtype=torch.float64, device=values.device)
    return torch.quantile(values.to(torch.float64), quantiles, dim=0)


def bootstrap_top_label(
    sample: TopLabelSample,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    n_bins: int = 10,
    statistics: tuple[str, ...] = BOOTSTRAP_STATISTICS,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals ``name -> (lower, upper)`` for each of ``statistics``."""
    check_positive_int(n_resamples, "n_resamples")
    check_positive_int(n_bins, "n_bins")
    level, statistics = check_level(level), check_statistics(statistics)
    values, _ = resampled_statistics(sample, n_resamples, seed, n_bins, statistics=statistics)
    bounds = percentile_interval(torch.stack([values[name] for name in statistics], 1), level).T.tolist()
    return {name: (low, high) for name, (low, high) in zip(statistics, bounds, strict=True)}


def top_label_sample(probs: ArrayLike, labels: ArrayLike) -> TopLabelSample:
    """The per-sample values of validated probabilities (N, C) and labels (N,)."""
    probs, labels = checked_probs_labels(probs, labels)
    confidence, correct = top_label(probs, labels)
    nll = -true_log_prob_from_probs(probs, labels)
    return TopLabelSample(confidence, correct, nll, brier_per_sample(probs, labels))
