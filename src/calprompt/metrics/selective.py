"""Selective prediction: the risk-coverage curve, its area (AURC) and the excess area (E-AURC).

The model answers the ``k`` most confident samples (top-label confidence) and abstains on the rest; the *risk* at
coverage ``k / N`` is the error rate among the answered samples (Geifman & El-Yaniv, 2017). AURC is the mean risk over
``k = 1..N``; E-AURC subtracts the AURC of an oracle that answers all correct samples first (Geifman et al., 2019).

Ties: samples with equal confidence cannot be ordered by the model, so within a tied group the number of errors
among the first ``j`` answered is taken as its expectation over a uniformly random order,
``j * errors_in_group / group_size``. The curve is therefore independent of the input order.
All values are fractions in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from calprompt.metrics.calibration import checked_probs_labels, top_label
from calprompt.metrics.checks import ArrayLike


def risk_coverage_from_top_label(confidence: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
    """Coverage ``k / N`` and risk for ``k = 1..N`` (each float64 (N,)) from top-label confidence and correctness."""
    n = confidence.shape[0]
    sorted_conf, order = torch.sort(confidence, descending=True, stable=True)
    errors = torch.cumsum((~correct[order]).to(torch.float64), dim=0)  # errors among the first k, k = 1..N
    answered = torch.arange(1, n + 1, dtype=torch.float64, device=confidence.device)
    # Tied groups: `group` numbers them 0, 1, ...; `end` is each group's last position.
    starts_group = torch.ones(n, dtype=torch.bool, device=confidence.device)
    starts_group[1:] = sorted_conf[1:] != sorted_conf[:-1]
    group = torch.cumsum(starts_group.to(torch.int64), dim=0) - 1
    end = torch.nonzero(torch.cat([starts_group[1:], starts_group.new_ones(1)])).squeeze(1)
    zero = errors.new_zeros(1)
    errors_before = torch.cat([zero, errors[end[:-1]]])[group]  # errors of all earlier groups
    size_before = torch.cat([zero, answered[end[:-1]]])[group]
    group_errors = errors[end][group] - errors_before
    group_size = answered[end][group] - size_before
    expected_errors = errors_before + (answered - size_before) * group_errors / group_size
    return answered / n, expected_errors / answered


def excess_from_aurc(area: Tensor, correct: Tensor) -> Tensor:
    """E-AURC: ``area`` minus the AURC of the oracle ranking that answers every correct sample first."""
    n = correct.shape[0]
    answered = torch.arange(1, n + 1, dtype=torch.float64, device=correct.device)
    oracle_risk = (answered - correct.sum()).clamp(min=0) / answered
    return area - oracle_risk.mean()


def risk_coverage_curve(probs: ArrayLike, labels: ArrayLike) -> tuple[Tensor, Tensor]:
    """Return ``(coverage, risk)``, each float64 (N,): risk of answering the ``k`` most confident samples."""
    probs, labels = checked_probs_labels(probs, labels)
    return risk_coverage_from_top_label(*top_label(probs, labels))


def aurc(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """Area under the risk-coverage curve: the mean risk over coverages ``1/N, 2/N, ..., 1`` (lower is better)."""
    return risk_coverage_curve(probs, labels)[1].mean()


def excess_aurc(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """E-AURC: AURC minus that of the perfect confidence ranking (0 for a perfect ranking)."""
    probs, labels = checked_probs_labels(probs, labels)
    confidence, correct = top_label(probs, labels)
    return excess_from_aurc(risk_coverage_from_top_label(confidence, correct)[1].mean(), correct)
