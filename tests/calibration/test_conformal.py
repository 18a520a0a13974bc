"""Split conformal: coverage within the finite-sample bounds over many seeds, sets equal a plain per-sample loop,
seeded randomisation, and argument errors."""

import math

import numpy as np
import pytest
import torch

from calprompt.calibration.conformal import SplitConformal, conformal_threshold, conformal_uniforms

SCORES = ("lac", "aps", "raps")


def _exchangeable(seed: int, n: int, n_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, n_classes, generator=generator, dtype=torch.float64)
    labels = torch.multinomial((0.7 * logits).softmax(1), 1, generator=generator).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("score", SCORES)
def test_coverage_is_within_the_finite_sample_bounds(score):
    """Mean test coverage over 200 seeds lies in [1 - alpha, 1 - alpha + 1/(n+1)] up to 4 standard errors."""
    alpha, n_cal = 0.1, 200
    coverages = []
    for seed in range(200):
        logits, labels = _exchangeable(seed, n_cal + 1000)
        predictor = SplitConformal(score, alpha, seed=seed).fit(logits[:n_cal], labels[:n_cal])
        coverages.append(predictor.evaluate(logits[n_cal:], labels[n_cal:]).coverage)
    mean, error = np.mean(coverages), np.std(coverages) / math.sqrt(len(coverages))
    assert 1 - alpha - 4 * error <= mean <= 1 - alpha + 1 / (n_cal + 1) + 4 * error, (mean, error)


def _loop_scores(probs: np.ndarray, score: str, u: np.ndarray, lam: float, k_reg: int) -> np.ndarray:
    """The published score definitions, one sample and one class at a time."""
    n, n_classes = probs.shape
    out = np.zeros_like(probs)
    for i in range(n):
        order = sorted(range(n_classes), key=lambda c: (-probs[i, c], c))
        for c in range(n_classes):
            if score == "lac":
                out[i, c] = 1 - probs[i, c]
                continue
            rank = order.index(c) + 1
            value = sum(probs[i, j] for j in order[: rank - 1]) + u[i] * probs[i, c]
            if score == "raps":
                value += lam * max(0, rank - k_reg)
            out[i, c] = value
    return out


@pytest.mark.parametrize("score", SCORES)
def test_sets_equal_a_plain_loop(score):
    logits, labels = _exchangeable(7, 260, n_classes=8)
    cal, test = slice(0, 200), slice(200, 260)
    predictor = SplitConformal(score, 0.2, lam=0.05, k_reg=2, seed=3).fit(logits[cal], labels[cal])
    probs = logits.softmax(1).numpy()
    u_cal = conformal_uniforms(200, 3, "calibration").numpy()
    u_test = conformal_uniforms(60, 3, "test").numpy()
    cal_scores = _loop_scores(probs[cal], score, u_cal, 0.05, 2)[np.arange(200), labels[cal].numpy()]
    k = math.ceil(201 * 0.8)
    threshold = np.sort(cal_scores)[k - 1]
    assert predictor.threshold_ == pytest.approx(threshold, abs=1e-12)
    expected = _loop_scores(probs[test], score, u_test, 0.05, 2) <= threshold
    got = predictor.predict_sets(logits[test]).numpy()
    assert np.array_equal(got, expected)
    assert predictor.evaluate(logits[test], labels[test]).mean_set_size == pytest.approx(expected.sum(1).mean())


def test_randomisation_is_seeded():
    logits, labels = _exchangeable(1, 300)
    first = SplitConformal("raps", seed=4).fit(logits[:200], labels[:200])
    second = SplitConformal("raps", seed=4).fit(logits[:200], labels[:200])
    other = SplitConformal("raps", seed=5).fit(logits[:200], labels[:200])
    assert first.threshold_ == second.threshold_ != other.threshold_
    assert torch.equal(first.predict_sets(logits[200:]), second.predict_sets(logits[200:]))


def test_threshold_is_infinite_when_too_few_calibration_samples():
    assert conformal_threshold(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), alpha=0.1) == math.inf
    assert conformal_threshold(torch.arange(1, 20, dtype=torch.float64), alpha=0.1) == 18.0  # ceil(20 * 0.9) = 18


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"score": "thr"}, "score"), ({"alpha": 1.0}, "alpha"), ({"k_reg": 0}, "k_reg")]
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitConformal(**kwargs)
