"""Accuracy and proper scoring rules (NLL, Brier), plus the base/novel harmonic mean.

Like every metric in :mod:`calprompt.metrics` they take probabilities ``probs`` (N, C) and integer ``labels`` (N,)
and return a 0-d float64 tensor on the input's device. Accuracy is a fraction in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from calprompt._validation import check_non_negative
from calprompt.metrics.calibration import checked_probs_labels, top_label, true_class_prob
from calprompt.metrics.checks import ArrayLike


def true_log_prob_from_probs(probs: Tensor, labels: Tensor) -> Tensor:
    """Float64 ``log p_{i, y_i}`` (N,); an exact zero is clamped to the smallest normal float64 (~708 nats, not inf)."""
    true_prob = true_class_prob(probs, labels).to(torch.float64)
    return true_prob.clamp(min=torch.finfo(torch.float64).tiny).log()


def brier_per_sample(probs: Tensor, labels: Tensor) -> Tensor:
    """Float64 ``sum_c (p_ic - [y_i = c])^2 = ||p_i||^2 - 2 p_{i, y_i} + 1`` per sample (N,) (no one-hot matrix)."""
    squared_norm = torch.linalg.vector_norm(probs, dim=1, dtype=torch.float64).square()  # (N,)
    true_prob = true_class_prob(probs, labels).to(torch.float64)  # (N,)
    return squared_norm - 2 * true_prob + 1


def brier_from_probs(probs: Tensor, labels: Tensor) -> Tensor:
    """Mean over samples of :func:`brier_per_sample`."""
    return brier_per_sample(probs, labels).mean()


def accuracy(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """Top-1 accuracy as a fraction in [0, 1] (argmax takes the first index on ties)."""
    probs, labels = checked_probs_labels(probs, labels)
    return top_label(probs, labels)[1].to(torch.float64).mean()


def negative_log_likelihood(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """Mean negative log-likelihood of the true class (nats, in [0, inf)).

    A true-class probability of exactly 0 is clamped (see :func:`true_log_prob_from_probs`) so the result stays
    finite; ``evaluate(logits, ...)`` works from the logits and needs no clamp.
    """
    probs, labels = checked_probs_labels(probs, labels)
    return -true_log_prob_from_probs(probs, labels).mean()


def brier_score(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """Multiclass Brier score (Brier, 1950): mean over samples of ``sum_c (p_ic - [y_i = c])^2``, in [0, 2]."""
    probs, labels = checked_probs_labels(probs, labels)
    return brier_from_probs(probs, labels)


def macro_f1_from_predictions(prediction: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """Macro-F1 over the labels present in ``labels``: per present class ``2 TP / (2 TP + FP + FN)``, then the mean
    (scikit-learn's ``f1_score(y, pred, average="macro", labels=np.unique(y))``)."""
    true_count = torch.bincount(labels, minlength=n_classes).to(torch.float64)
    predicted_count = torch.bincount(prediction, minlength=n_classes).to(torch.float64)
    hits = torch.bincount(labels[prediction == labels], minlength=n_classes).to(torch.float64)
    present = true_count > 0  # FP + FN + 2 TP >= true count > 0 there: no zero division
    return (2 * hits / (true_count + predicted_count))[present].mean()


def macro_f1(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """Macro-averaged F1 of the top-1 predictions over the classes that occur in ``labels`` (fraction in [0, 1]).

    Classes never in ``labels`` are left out even if predicted (their F1 would be 0), as the TCPT and DAC evaluators
    do; a wrong prediction of such a class still costs the true class its recall.
    """
    probs, labels = checked_probs_labels(probs, labels)
    return macro_f1_from_predictions(probs.argmax(dim=1), labels, probs.shape[1])


def harmonic_mean(base: float, novel: float) -> float:
    """Harmonic mean ``2 b n / (b + n)`` of base and novel accuracy (0 when both are 0).

    Scale-free: fractions in give a fraction out, percentages in give a percentage out.
    """
    base = check_non_negative(base, "base")
    novel = check_non_negative(novel, "novel")
    total = base + novel
    return 0.0 if total == 0 else 2 * base * novel / total
