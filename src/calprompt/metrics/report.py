"""``evaluate``: every metric of one (scores, labels) pair in a typed, JSON-serialisable report.

The report stores plain Python floats and lists (fractions in [0, 1]; NLL in nats, Brier in [0, 2]); whoever prints a
table converts to percent. ``to_dict`` / ``from_dict`` round-trip through ``json``; reports written before a field
existed (the estimators with a default of ``None``) still load, with that field ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from calprompt._validation import check_int, check_non_negative_int, check_positive_int, fail
from calprompt.metrics.binning import bin_edges
from calprompt.metrics.bootstrap import (
    BOOTSTRAP_STATISTICS,
    TopLabelSample,
    check_level,
    percentile_interval,
    resampled_statistics,
)
from calprompt.metrics.calibration import (
    adaptive_ece_from_top_label,
    checked_probs_labels,
    classwise_bin_sums,
    classwise_ece_from_sums,
    ece_from_totals,
    mce_from_totals,
    sample_weighted_mce_from_totals,
    top_label,
    top_label_totals,
    true_class_prob,
)
from calprompt.metrics.checks import ArrayLike, check_labels, check_logits
from calprompt.metrics.classification import macro_f1_from_predictions, true_log_prob_from_probs
from calprompt.metrics.debiased import debiased_ece_from_totals, ece_sweep_from_top_label
from calprompt.metrics.proximity import check_proximity, piece_from_top_label
from calprompt.metrics.selective import excess_from_aurc, risk_coverage_from_top_label
from calprompt.metrics.smooth import smooth_ece_from_top_label, smooth_reliability_curve

# The report keeps the risk-coverage curve at these coverages (5 % steps) rather than at all N points.
COVERAGE_STEPS = 20


# The smoothed reliability curve is stored at this many evenly spaced confidences.
SMOOTH_MESH_POINTS = 101


def _check_keys(cls: type, data: Mapping[str, Any]) -> None:
    """Refuse a mapping with unknown keys or without a required one (fields with a default may be absent)."""
    known = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING}
    if not isinstance(data, Mapping) or not required <= set(data) <= known:
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        fail(cls.__name__, f"a mapping with the keys {sorted(required)} and optionally {sorted(known - required)}", got)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin data of a reliability diagram (equal-width bins; convention in :mod:`calprompt.metrics.binning`).

    ``edges`` has ``n_bins + 1`` entries; ``accuracy`` and ``confidence`` are bin means, ``None`` for empty bins.
    """

    edges: list[float]
    counts: list[int]
    accuracy: list[float | None]
    confidence: list[float | None]

    @classmethod
    def from_totals(cls, count: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> ReliabilityBins:
        """Build from per-bin float64 totals (count, sum of confidence, number correct)."""
        counts, conf_sums, hits = torch.stack([count, confidence_sum, correct_sum]).tolist()
        counts = [int(c) for c in counts]
        return cls(
            edges=bin_edges(len(counts)).tolist(),
            counts=counts,
            accuracy=[h / c if c else None for h, c in zip(hits, counts, strict=True)],
            confidence=[s / c if c else None for s, c in zip(conf_sums, counts, strict=True)],
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReliabilityBins:
        _check_keys(cls, data)
        return cls(**{key: list(value) for key, value in data.items()})


@dataclass(frozen=True)
class RiskCoverage:
    """The risk-coverage curve sampled at ``coverage`` = 0.05, 0.10, ..., 1.0 (risk of the ceil(c N) most confident)."""

    coverage: list[float]
    risk: list[float]

    @classmethod
    def from_curve(cls, risk: Tensor) -> RiskCoverage:
        n = risk.shape[0]
        steps = range(1, COVERAGE_STEPS + 1)
        answered = torch.tensor([max(1, -(-step * n // COVERAGE_STEPS)) for step in steps], device=risk.device)
        return cls(coverage=[step / COVERAGE_STEPS for step in steps], risk=risk[answered - 1].tolist())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RiskCoverage:
        _check_keys(cls, data)
        return cls(coverage=list(data["coverage"]), risk=list(data["risk"]))


@dataclass(frozen=True)
class SmoothReliability:
    """The kernel-smoothed reliability curve of smooth ECE at its bandwidth, on ``SMOOTH_MESH_POINTS`` confidences.

    ``accuracy`` is the smoothed ``E[correct | confidence]``, ``density`` the smoothed density of confidences;
    ``lower`` / ``upper`` the pointwise bootstrap percentile band at the same bandwidth (``None`` without bootstrap).
    """

    bandwidth: float
    mesh: list[float]
    accuracy: list[float]
    density: list[float]
    lower: list[float] | None = None
    upper: list[float] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmoothReliability:
        _check_keys(cls, data)
        return cls(
            **{key: value if key == "bandwidth" or value is None else list(value) for key, value in data.items()}
        )


@dataclass(frozen=True)
class BootstrapIntervals:
    """Percentile bootstrap intervals ``[lower, upper]`` (see :mod:`calprompt.metrics.bootstrap`)."""

    n_resamples: int
    seed: int
    level: float
    accuracy: list[float]
    ece: list[float]
    smooth_ece: list[float]
    nll: list[float]
    brier: list[float]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BootstrapIntervals:
        _check_keys(cls, data)
        return cls(**{key: list(value) if key in BOOTSTRAP_STATISTICS else value for key, value in data.items()})


@dataclass(frozen=True)
class EvaluationReport:
    """All metrics of one evaluation. Fractions in [0, 1] unless stated; see each metric function for its formula.

    The fields with a default are ``None`` in reports stored before they existed.

    Attributes:
        n, n_classes, n_bins: number of samples, classes and equal-width / equal-mass bins.
        accuracy: top-1 accuracy. ece, adaptive_ece, mce, classwise_ece: calibration errors.
        nll: mean negative log-likelihood in nats. brier: multiclass Brier score in [0, 2].
        aurc, e_aurc: area under the risk-coverage curve and its excess over the oracle ranking.
        reliability: per-bin data of the reliability diagram. risk_coverage: the sampled risk-coverage curve.
        smooth_ece, smooth_ece_bandwidth: smooth ECE and its automatic bandwidth (:mod:`calprompt.metrics.smooth`).
        debiased_ece, ece_sweep, ece_sweep_bins: the bias-reduced binned estimators (:mod:`calprompt.metrics.debiased`).
        smooth_reliability: the smoothed reliability curve. intervals: bootstrap intervals, when asked for.
        macro_f1: macro-F1 over the labels present. sample_weighted_mce: ``max_b |acc_b - conf_b| n_b / N``, the
            "MCE" of the TCPT/DAC evaluators. piece: proximity-informed ECE (:mod:`calprompt.metrics.proximity`),
            ``None`` when no proximity was given.
    """

    n: int
    n_classes: int
    n_bins: int
    accuracy: float
    ece: float
    adaptive_ece: float
    mce: float
    classwise_ece: float
    nll: float
    brier: float
    aurc: float
    e_aurc: float
    reliability: ReliabilityBins
    risk_coverage: RiskCoverage
    smooth_ece: float | None = None
    smooth_ece_bandwidth: float | None = None
    debiased_ece: float | None = None
    ece_sweep: float | None = None
    ece_sweep_bins: int | None = None
    smooth_reliability: SmoothReliability | None = None
    intervals: BootstrapIntervals | None = None
    macro_f1: float | None = None
    sample_weighted_mce: float | None = None
    piece: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict of ints, floats, lists and ``None``: ready for ``json.dumps``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        """Inverse of :meth:`to_dict`; refuses missing or unknown keys."""
        _check_keys(cls, data)
        values = dict(data)
        values["reliability"] = ReliabilityBins.from_dict(data["reliability"])
        values["risk_coverage"] = RiskCoverage.from_dict(data["risk_coverage"])
        for key, kind in (("smooth_reliability", SmoothReliability), ("intervals", BootstrapIntervals)):
            if values.get(key) is not None:
                values[key] = kind.from_dict(values[key])
        return cls(**values)


# Rows per chunk: a float64 chunk of about 8 MiB stays in cache while every per-row statistic is taken from it.
_CHUNK_ELEMENTS = 1 << 20


@dataclass
class _RowStatistics:
    """What every metric needs, gathered chunk by chunk: per-row vectors (N,) and additive classwise sums."""

    confidence: list[Tensor]
    correct: list[Tensor]
    true_log_prob: list[Tensor]
    squared_norm: list[Tensor]
    true_prob: list[Tensor]
    prediction: list[Tensor]
    labels: list[Tensor]
    class_prob_sum: Tensor | None = None
    class_hits: Tensor | None = None

    def add(self, probs: Tensor, true_log_prob: Tensor, labels: Tensor, n_bins: int) -> None:
        confidence, correct = top_label(probs, labels)
        self.confidence.append(confidence)
        self.correct.append(correct)
        self.prediction.append(probs.argmax(dim=1))
        self.labels.append(labels)
        self.true_log_prob.append(true_log_prob)
        self.squared_norm.append(torch.linalg.vector_norm(probs, dim=1, dtype=torch.float64).square())
        self.true_prob.append(true_class_prob(probs, labels).to(torch.float64))
        prob_sum, hits = classwise_bin_sums(probs, labels, n_bins)
        self.class_prob_sum = prob_sum if self.class_prob_sum is None else self.class_prob_sum + prob_sum
        self.class_hits = hits if self.class_hits is None else self.class_hits + hits


def _row_chunks(n: int, n_classes: int) -> range:
    return range(0, n, max(1, _CHUNK_ELEMENTS // n_classes))


@dataclass(frozen=True)
class BootstrapSettings:
    """How many resamples, from which seed, at which confidence level (``n_resamples = 0``: no intervals)."""

    n_resamples: int = 0
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        check_non_negative_int(self.n_resamples, "bootstrap", expected="a number of resamples >= 0 (0: no intervals)")
        check_int(self.seed, "seed")
        check_level(self.level)


def _smooth_and_intervals(
    sample: TopLabelSample, n_bins: int, bandwidth: float, settings: BootstrapSettings
) -> tuple[SmoothReliability, BootstrapIntervals | None]:
    curve = smooth_reliability_curve(sample.confidence, sample.correct, bandwidth, n_mesh=SMOOTH_MESH_POINTS)
    smooth = SmoothReliability(bandwidth, curve.mesh.tolist(), curve.accuracy[0].tolist(), curve.density[0].tolist())
    if not settings.n_resamples:
        return smooth, None
    values, curves = resampled_statistics(sample, settings.n_resamples, settings.seed, n_bins, bandwidth)
    bounds = percentile_interval(torch.stack([values[name] for name in BOOTSTRAP_STATISTICS], 1), settings.level)
    band = percentile_interval(curves, settings.level).tolist()
    smooth = SmoothReliability(**{**asdict(smooth), "lower": band[0], "upper": band[1]})
    named = dict(zip(BOOTSTRAP_STATISTICS, bounds.T.tolist(), strict=True))
    return smooth, BootstrapIntervals(settings.n_resamples, settings.seed, settings.level, **named)


def _report(
    stats: _RowStatistics,
    n: int,
    n_classes: int,
    n_bins: int,
    settings: BootstrapSettings,
    proximity: Tensor | None = None,
) -> EvaluationReport:
    """Compute every metric from the gathered row statistics, sharing the top-label work."""
    confidence, correct = torch.cat(stats.confidence), torch.cat(stats.correct)
    true_log_prob, true_prob = torch.cat(stats.true_log_prob), torch.cat(stats.true_prob)
    # Brier per row: ||p_i||^2 - 2 p_{i, y_i} + 1 (no one-hot matrix)
    sample = TopLabelSample(confidence, correct, -true_log_prob, torch.cat(stats.squared_norm) - 2 * true_prob + 1)
    totals = top_label_totals(confidence, correct, n_bins)
    risk = risk_coverage_from_top_label(confidence, correct)[1]
    area = risk.mean()
    smooth_ece, bandwidth = smooth_ece_from_top_label(confidence, correct)
    sweep, sweep_bins = ece_sweep_from_top_label(confidence, correct)
    scalars = torch.stack(
        [
            correct.to(torch.float64).mean(),
            ece_from_totals(*totals),
            adaptive_ece_from_top_label(confidence, correct, n_bins),
            mce_from_totals(*totals),
            classwise_ece_from_sums(stats.class_prob_sum, stats.class_hits, n),
            sample.nll.mean(),
            sample.brier.mean(),
            area,
            excess_from_aurc(area, correct),
            smooth_ece[0],
            bandwidth[0],
            debiased_ece_from_totals(*totals),
            sweep,
            macro_f1_from_predictions(torch.cat(stats.prediction), torch.cat(stats.labels), n_classes),
            sample_weighted_mce_from_totals(*totals),
            area if proximity is None else piece_from_top_label(confidence, correct, proximity, n_bins),
        ]
    ).tolist()  # one device -> host transfer for all scalars
    accuracy, ece, adaptive_ece, mce, classwise_ece, nll, brier, aurc, e_aurc, smooth, width, debiased, swept = scalars[
        :13
    ]
    macro_f1, weighted_mce, piece = scalars[13:]
    smooth_reliability, intervals = _smooth_and_intervals(sample, n_bins, width, settings)
    return EvaluationReport(
        n=n,
        n_classes=n_classes,
        n_bins=n_bins,
        accuracy=accuracy,
        ece=ece,
        adaptive_ece=adaptive_ece,
        mce=mce,
        classwise_ece=classwise_ece,
        nll=nll,
        brier=brier,
        aurc=aurc,
        e_aurc=e_aurc,
        reliability=ReliabilityBins.from_totals(*totals),
        risk_coverage=RiskCoverage.from_curve(risk),
        smooth_ece=smooth,
        smooth_ece_bandwidth=width,
        debiased_ece=debiased,
        ece_sweep=swept,
        ece_sweep_bins=sweep_bins,
        smooth_reliability=smooth_reliability,
        intervals=intervals,
        macro_f1=macro_f1,
        sample_weighted_mce=weighted_mce,
        piece=None if proximity is None else piece,
    )


def _true_log_prob_from_logits(logits: Tensor, probs: Tensor, labels: Tensor) -> Tensor:
    """Float64 ``log p_{i, y_i}`` (N,): the log of the softmax where it is a normal float, else an exact log-softmax."""
    true_prob = true_class_prob(probs, labels)
    tiny = torch.finfo(torch.float64).tiny
    true_log_prob = true_prob.clamp(min=tiny).log()
    underflow = torch.nonzero(true_prob < tiny).squeeze(1)  # logit gaps beyond ~708: rare, recomputed row by row
    if underflow.numel():
        exact = torch.log_softmax(logits[underflow].to(torch.float64), dim=1)
        true_log_prob[underflow] = true_class_prob(exact, labels[underflow])
    return true_log_prob


def evaluate(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    proximity: ArrayLike | None = None,
    n_bins: int = 10,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> EvaluationReport:
    """Evaluate logits (N, C) against labels (N,): softmax in float64, then every metric of the package.

    ``bootstrap > 0`` adds percentile intervals at ``level`` from that many resamples drawn with ``seed``
    (:mod:`calprompt.metrics.bootstrap`) and the bootstrap band of the smoothed reliability curve; 0 (the default)
    keeps evaluation fast. ``proximity`` (N,), each sample's proximity to the fitting split
    (:mod:`calprompt.calibration.proximity`), adds PIECE.

    Raises ``ValueError`` for empty input, mismatched lengths, labels outside ``[0, C)`` or NaN/inf logits.
    """
    check_positive_int(n_bins, "n_bins")
    settings = BootstrapSettings(bootstrap, seed, level)
    logits = check_logits(logits)
    labels = check_labels(labels, logits.shape[0], logits.shape[1], logits.device)
    n, n_classes = logits.shape
    proximity = None if proximity is None else check_proximity(proximity, n)
    stats = _RowStatistics([], [], [], [], [], [], [])
    for start in _row_chunks(n, n_classes):  # softmax in float64, one cache-sized block of rows at a time
        rows = slice(start, start + max(1, _CHUNK_ELEMENTS // n_classes))
        probs = torch.softmax(logits[rows].to(torch.float64), dim=1)  # (rows, C)
        stats.add(probs, _true_log_prob_from_logits(logits[rows], probs, labels[rows]), labels[rows], n_bins)
    return _report(stats, n, n_classes, n_bins, settings, proximity)


def evaluate_probs(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    proximity: ArrayLike | None = None,
    n_bins: int = 10,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> EvaluationReport:
    """Like :func:`evaluate`, for probabilities (N, C) (rows summing to 1) instead of logits."""
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    settings = BootstrapSettings(bootstrap, seed, level)
    n, n_classes = probs.shape
    proximity = None if proximity is None else check_proximity(proximity, n)
    stats = _RowStatistics([], [], [], [], [], [], [])
    for start in _row_chunks(n, n_classes):
        rows = slice(start, start + max(1, _CHUNK_ELEMENTS // n_classes))
        stats.add(probs[rows], true_log_prob_from_probs(probs[rows], labels[rows]), labels[rows], n_bins)
    return _report(stats, n, n_classes, n_bins, settings, proximity)


def reliability_bins(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> ReliabilityBins:
    """Per-bin counts, accuracy and mean confidence of the top-label prediction (equal-width bins)."""
    probs, labels = checked_probs_labels(probs, labels, n_bins)
    return ReliabilityBins.from_totals(*top_label_totals(*top_label(probs, labels), n_bins))
