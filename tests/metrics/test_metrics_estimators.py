"""Smooth ECE against relplot, debiased and sweep ECE against plain reimplementations, and their bias."""

import itertools
import math

import numpy as np
import pytest
import torch

from calprompt.metrics import (
    debiased_calibration_error,
    evaluate_probs,
    expected_calibration_error,
    smooth_calibration_error,
    sweep_calibration_error,
)
from calprompt.metrics.smooth import smooth_ece_from_top_label

relplot = pytest.importorskip("relplot")


def _top_label_case(seed: int, n: int, calibrated: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 1.0, n)
    y = (rng.uniform(size=n) < (f if calibrated else f**2)).astype(np.float64)
    return f, y


@pytest.mark.parametrize("calibrated", [False, True])
@pytest.mark.parametrize(("seed", "n"), [(0, 40), (1, 700), (2, 5000)])
def test_smooth_ece_matches_relplot(seed, n, calibrated):
    f, y = _top_label_case(seed, n, calibrated)
    value, bandwidth = smooth_ece_from_top_label(torch.from_numpy(f), torch.from_numpy(y))
    expected, expected_width = relplot.smECE(f, y, return_width=True)
    assert float(bandwidth[0]) == expected_width  # the same bisection path, step for step
    assert float(value[0]) == pytest.approx(expected, abs=1e-6)


def test_smooth_ece_of_softmax_matches_relplot_on_its_confidences():
    generator = torch.Generator().manual_seed(5)
    logits = 3 * torch.randn(2000, 8, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 8, (2000,), generator=generator)
    f, y = relplot.multiclass_logits_to_confidences(logits.numpy(), labels.numpy())
    assert float(smooth_calibration_error(logits.softmax(1), labels)) == pytest.approx(relplot.smECE(f, y), abs=1e-6)


def test_smooth_ece_weights_equal_duplicated_samples():
    """Integer weights (what the bootstrap passes) give relplot's value on the data with samples repeated."""
    f, y = _top_label_case(3, 300, calibrated=False)
    counts = np.random.default_rng(4).integers(0, 4, size=300)
    weights = torch.from_numpy(counts.astype(np.float64))[None]
    value = smooth_ece_from_top_label(torch.from_numpy(f), torch.from_numpy(y), weights)[0]
    assert float(value[0]) == pytest.approx(relplot.smECE(np.repeat(f, counts), np.repeat(y, counts)), abs=1e-6)


def test_smooth_ece_rows_of_different_grid_sizes_equal_each_row_alone():
    """Weight rows whose bandwidths need different grids (one row on every sample of a confident, calibrated set:
    a small bandwidth; rows on 20 samples: larger ones) give each row's value computed alone; the vectorised grid
    and mesh sizes equal the scalar rules, halves rounded to even included."""
    from calprompt.metrics import smooth

    rng = np.random.default_rng(5)
    f = 0.98 + 0.02 * rng.random(3000)  # confident and calibrated: smECE, hence the bandwidth, below 0.01
    y = (rng.random(3000) < f).astype(np.float64)
    few = torch.zeros(3000, dtype=torch.float64)
    few[:20] = 1.0
    weights = torch.stack([torch.ones(3000, dtype=torch.float64), few, 2 * few])
    values, bandwidths = smooth_ece_from_top_label(torch.from_numpy(f), torch.from_numpy(y), weights)
    sizes = [smooth.grid_points(float(b)) for b in bandwidths]
    assert len(set(sizes)) > 1  # the rows really take different grids
    for row in range(3):
        alone = smooth_ece_from_top_label(torch.from_numpy(f), torch.from_numpy(y), weights[row : row + 1])
        assert float(values[row]) == pytest.approx(float(alone[0][0]), rel=1e-12, abs=1e-15)
        assert float(bandwidths[row]) == float(alone[1][0])
    sigmas = torch.cat([20 / (torch.arange(1, 40001, dtype=torch.float64) + 0.5), torch.rand(1000).double() + 1e-3])
    assert smooth._grid_points_of(sigmas).tolist() == [smooth.grid_points(s) for s in sigmas.tolist()]
    assert smooth._mesh_points_of(sigmas).tolist() == [smooth.mesh_points(s) for s in sigmas.tolist()]


def _naive_debiased(f: np.ndarray, y: np.ndarray, n_bins: int, draws: int, rng) -> tuple[float, float]:
    """Kumar et al.'s estimator as written: plug-in ECE, then the mean ECE of Gaussian-resampled bin accuracies."""
    edges = np.linspace(0, 1, n_bins + 1)
    plug_in, bins = 0.0, []
    for lo, hi in itertools.pairwise(edges):
        inside = (f > lo) & (f <= hi) if lo > 0 else (f >= lo) & (f <= hi)
        if inside.any():
            acc, conf, share = y[inside].mean(), f[inside].mean(), inside.mean()
            plug_in += share * abs(acc - conf)
            bins.append((acc, conf, share, math.sqrt(acc * (1 - acc) / inside.sum())))
    acc, conf, share, std = map(np.array, zip(*bins, strict=True))
    resampled = (share * np.abs(rng.normal(acc, std, size=(draws, len(bins))) - conf)).sum(1)
    return 2 * plug_in - resampled.mean(), resampled.std() / math.sqrt(draws)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_debiased_ece_matches_monte_carlo_reimplementation(seed):
    f, y = _top_label_case(seed, 400, calibrated=seed != 0)
    # binary probabilities whose top label is class 0 exactly when f >= 0.5: keep f above it
    f = 0.5 + f / 2
    probs = torch.from_numpy(np.stack([f, 1 - f], 1))
    labels = torch.from_numpy(np.where(y > 0, 0, 1))
    expected, standard_error = _naive_debiased(f, y, 10, 200_000, np.random.default_rng(seed))
    got = float(debiased_calibration_error(probs, labels, n_bins=10))
    assert got == pytest.approx(expected, abs=6 * standard_error)  # Monte Carlo error of the oracle only


def _naive_sweep(f: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(f, kind="stable")
    f, y = f[order], y[order]
    best = 1
    for n_bins in range(2, len(f) + 1):
        accuracy = [part.sum() / len(part) for part in np.array_split(y, n_bins)]
        if any(b < a for a, b in itertools.pairwise(accuracy)):
            break
        best = n_bins
    return sum(
        abs(a.sum() - c.sum()) for a, c in zip(np.array_split(y, best), np.array_split(f, best), strict=False)
    ) / len(f)


@pytest.mark.parametrize(("seed", "n"), [(0, 30), (1, 500), (2, 3000), (3, 3000)])
def test_sweep_ece_matches_loop_reimplementation(seed, n):
    f, y = _top_label_case(seed, n, calibrated=seed % 2 == 1)
    f = 0.5 + f / 2
    probs = torch.from_numpy(np.stack([f, 1 - f], 1))
    labels = torch.from_numpy(np.where(y > 0, 0, 1))
    assert float(sweep_calibration_error(probs, labels)) == pytest.approx(_naive_sweep(f, y), abs=1e-12)


def test_sweep_ece_of_a_perfect_ranking_uses_singleton_bins():
    """All errors below all hits: every bin count is monotone, so the sweep ends at N bins (mean |y - f|)."""
    f = np.linspace(0.5, 1.0, 200)
    y = (np.arange(200) >= 50).astype(np.float64)
    probs = torch.from_numpy(np.stack([f, 1 - f], 1))
    labels = torch.from_numpy(np.where(y > 0, 0, 1))
    assert float(sweep_calibration_error(probs, labels)) == pytest.approx(np.abs(y - f).mean(), abs=1e-12)


def test_debiased_and_smooth_estimates_are_less_biased_on_calibrated_predictions():
    """Labels drawn from the predicted probabilities (true ECE 0), n = 1000, seeds 0..49: mean estimate vs binned."""
    binned, debiased, smooth = [], [], []
    for seed in range(50):
        generator = torch.Generator().manual_seed(seed)
        probs = (2 * torch.randn(1000, 10, generator=generator, dtype=torch.float64)).softmax(1)
        labels = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        report = evaluate_probs(probs, labels)
        binned.append(report.ece)
        debiased.append(abs(report.debiased_ece))
        smooth.append(report.smooth_ece)
    assert float(expected_calibration_error(probs, labels)) == binned[-1]
    assert np.mean(debiased) < np.mean(binned)
    assert np.mean(smooth) < np.mean(binned)
