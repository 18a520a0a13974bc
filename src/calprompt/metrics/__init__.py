"""Vectorised accuracy and calibration metrics (torch; numpy arrays accepted).

Every metric takes probabilities ``probs`` (N, C) and integer ``labels`` (N,) and returns a 0-d float64 tensor on the
input's device; accuracies and calibration errors are **fractions** in [0, 1]. ``evaluate(logits, labels)`` (or
``evaluate_probs``) computes all of them at once into a JSON-serialisable :class:`EvaluationReport`, with seeded
bootstrap intervals on request (``bootstrap=1000``). The equal-width
bin convention, ``(lo, hi]`` with 0 in the first bin, is documented in :mod:`calprompt.metrics.binning`.
"""

from calprompt.metrics.calibration import (
    adaptive_calibration_error,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    sample_weighted_maximum_calibration_error,
)
from calprompt.metrics.classification import (
    accuracy,
    brier_score,
    harmonic_mean,
    macro_f1,
    negative_log_likelihood,
)
from calprompt.metrics.debiased import debiased_calibration_error, sweep_calibration_error
from calprompt.metrics.proximity import proximity_informed_calibration_error
from calprompt.metrics.report import (
    BootstrapIntervals,
    EvaluationReport,
    ReliabilityBins,
    RiskCoverage,
    SmoothReliability,
    evaluate,
    evaluate_probs,
    reliability_bins,
)
from calprompt.metrics.selective import aurc, excess_aurc, risk_coverage_curve
from calprompt.metrics.smooth import smooth_calibration_error

__all__ = [
    "BootstrapIntervals",
    "EvaluationReport",
    "ReliabilityBins",
    "RiskCoverage",
    "SmoothReliability",
    "accuracy",
    "adaptive_calibration_error",
    "aurc",
    "brier_score",
    "classwise_calibration_error",
    "debiased_calibration_error",
    "evaluate",
    "evaluate_probs",
    "excess_aurc",
    "expected_calibration_error",
    "harmonic_mean",
    "macro_f1",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "proximity_informed_calibration_error",
    "reliability_bins",
    "risk_coverage_curve",
    "sample_weighted_maximum_calibration_error",
    "smooth_calibration_error",
    "sweep_calibration_error",
]
