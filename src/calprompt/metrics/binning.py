"""Bin assignment shared by every binned calibration metric.

Convention (equal-width bins, ``n`` bins): the edges are ``k / n`` for ``k = 0..n``, computed in float64, and bin ``b``
is the half-open interval ``(edge[b], edge[b + 1]]``, except that the first bin also holds a value of exactly 0.
So a confidence of exactly 1.0 lands in the last bin, 0.0 in the first, and a value equal to an inner edge (0.3 with
10 bins) in the bin *below* that edge. Values are converted to float64 before comparison. torchmetrics instead uses
``[lo, hi)`` with 1.0 in an extra bin of its own; both agree whenever no value sits exactly on an edge.

Quantile bins (PIECE's proximity bins, ProCal's bin-based calibrator) put their edges at the ``k / n`` quantiles of
the values (linear interpolation, ``numpy.percentile``'s default) and assign ``searchsorted(inner edges, v,
side="right")``: a value on an inner edge goes to the bin above it, values beyond the outer edges to the outer bins.

Equal-mass bins (adaptive ECE) sort the values (stable, ascending) and split the ranks like ``numpy.array_split``:
the first ``N % n`` bins hold one sample more than the rest. Tied values may straddle a bin boundary; their order is
the input order, so the result is deterministic for a given input.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bin_edges(n_bins: int, device: torch.device | None = None) -> Tensor:
    """The ``n_bins + 1`` float64 edges ``k / n_bins``, each the float nearest to the exact fraction."""
    return torch.arange(n_bins + 1, dtype=torch.float64, device=device) / n_bins


def equal_width_bin_index(values: Tensor, n_bins: int) -> Tensor:
    """Bin index in ``[0, n_bins)`` of each value in [0, 1] under the ``(lo, hi]`` convention above (any shape)."""
    inner = bin_edges(n_bins, values.device)[1:-1]
    # bucketize(right=False) returns i with inner[i-1] < v <= inner[i]: exactly the (lo, hi] bins, 0 -> bin 0.
    return torch.bucketize(values.to(torch.float64), inner, right=False)


def equal_mass_bin_index(values: Tensor, n_bins: int) -> Tensor:
    """Bin index of each value of a 1-D tensor for equal-mass bins (sizes as ``numpy.array_split``)."""
    n = values.shape[0]
    order = torch.sort(values, stable=True).indices
    rank = torch.arange(n, device=values.device)
    small, extra = divmod(n, n_bins)  # the first `extra` bins hold `small + 1` samples
    split = extra * (small + 1)
    by_rank = torch.where(rank < split, rank // (small + 1), extra + (rank - split) // max(small, 1))
    index = torch.empty_like(by_rank)
    index[order] = by_rank
    return index


def bin_totals(index: Tensor, values: Tensor, hits: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin (count, sum of ``values``, sum of ``hits``) as float64 tensors of shape (n_bins,)."""
    count = torch.bincount(index, minlength=n_bins).to(torch.float64)
    value_sum = torch.bincount(index, weights=values.to(torch.float64), minlength=n_bins)
    hit_sum = torch.bincount(index, weights=hits.to(torch.float64), minlength=n_bins)
    return count, value_sum, hit_sum


def quantile_bin_edges(values: Tensor, n_bins: int) -> Tensor:
    """``n_bins + 1`` float64 edges at the ``0, 1/n, ..., 1`` quantiles of the 1-D ``values`` (linear interpolation)."""
    quantiles = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=values.device)
    return torch.quantile(values.to(torch.float64), quantiles, interpolation="linear")


def bin_by_edges(values: Tensor, edges: Tensor) -> Tensor:
    """Bin index in ``[0, len(edges) - 1)`` of each value: ``searchsorted(edges[1:-1], v, side="right")``."""
    inner = edges[1:-1].to(device=values.device, dtype=torch.float64).contiguous()
    return torch.searchsorted(inner, values.to(torch.float64).contiguous(), right=True)
