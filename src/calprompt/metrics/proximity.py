"""PIECE, the proximity-informed expected calibration error (Xiong et al., NeurIPS 2023), as the seed paper's
evaluator (TCPT) and the DAC repository compute it.

Cells are (proximity bin x confidence bin): 10 quantile bins of the per-image ``proximity`` (any per-image score:
the public evaluators pass the kNN proximity ``exp(-mean kNN distance)``, :mod:`calprompt.calibration.proximity`;
quantile bins of a monotone transform of it give the same cells up to values on an edge) times 10 equal-width
confidence bins, and

    PIECE = sum over cells |acc_cell - conf_cell| * n_cell / N.

The bin conventions are :mod:`calprompt.metrics.binning`'s (confidence bins ``(lo, hi]``, as the package's ECE; the
public code's ``np.digitize`` uses ``[lo, hi)``: the two differ only for a confidence exactly on an edge).
"""

from __future__ import annotations

from torch import Tensor

from calprompt._validation import check_positive_int, fail
from calprompt.metrics.binning import bin_by_edges, bin_totals, equal_width_bin_index, quantile_bin_edges
from calprompt.metrics.calibration import checked_probs_labels, ece_from_totals, top_label
from calprompt.metrics.checks import ArrayLike, as_tensor

#: Proximity bins of PIECE (the public evaluators' ``dist_bin_num``).
PROXIMITY_BINS = 10


def check_proximity(proximity: ArrayLike, n: int) -> Tensor:
    """Return ``proximity`` as a finite 1-D tensor of length ``n`` (one value per sample)."""
    tensor = as_tensor(proximity, "proximity")
    if tensor.ndim != 1 or tensor.shape[0] != n:
        fail("proximity", f"a 1-D array of {n} values (one per sample)", f"shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point() or not bool(tensor.isfinite().all()):
        fail("proximity", "finite floating-point values", f"{tensor.dtype} with NaN/inf or integers")
    return tensor


def piece_from_top_label(
    confidence: Tensor, correct: Tensor, proximity: Tensor, n_bins: int, n_proximity_bins: int = PROXIMITY_BINS
) -> Tensor:
    """PIECE from top-label confidence (N,), correctness (N,) and proximity (N,) (see the module docstring)."""
    near = bin_by_edges(proximity, quantile_bin_edges(proximity.to(confidence.device), n_proximity_bins))
    cell = near.to(confidence.device) * n_bins + equal_width_bin_index(confidence, n_bins)
    return ece_from_totals(*bin_totals(cell, confidence, correct, n_proximity_bins * n_bins))


def proximity_informed_calibration_error(
    probs: ArrayLike,
    labels: ArrayLike,
    proximity: ArrayLike,
    n_bins: int = 10,
    n_proximity_bins: int = PROXIMITY_BINS,
) -> Tensor:
    """PIECE over ``n_proximity_bins`` quantile bins of ``proximity`` (N,) x ``n_bins`` confidence bins (fraction)."""
    check_positive_int(n_proximity_bins, "n_proximity_bins")
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    proximity = check_proximity(proximity, probs.shape[0])
    return piece_from_top_label(*top_label(probs, labels), proximity, n_bins, n_proximity_bins)
