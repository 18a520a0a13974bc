"""Multi-isotonic regression, ProCal's two calibrators and the kNN proximity against re-typed oracles of the DAC
repository's code (ml-stat-Sustech/CLIP_Calibration, ``trainers/calibration/``), on random inputs, in float64.

The oracles use the packages the public code uses: scikit-learn's ``IsotonicRegression`` and statsmodels'
``KDEMultivariate``.
"""

import numpy as np
import pytest
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.preprocessing import label_binarize
from statsmodels.nonparametric.kernel_density import KDEMultivariate

from calprompt.calibration import DensityRatioCalibration, MultiIsotonicRegression, ProximityIsotonicRegression
from calprompt.calibration.posthoc import NotFittedError
from calprompt.calibration.proximity import knn_mean_distance, proximity, self_proximity


def _softmax(logit):
    return np.exp(logit) / np.sum(np.exp(logit), 1)[:, None]


class OracleMultiIsotonic:
    """``MultiIsotonicRegression`` of multi_isotonic_regression.py, re-typed (n_classes > 2)."""

    def __init__(self):
        self.calibrator = IsotonicRegression(out_of_bounds="clip")

    def fit_transform(self, logit, label):
        label = label_binarize(label, classes=np.arange(logit.shape[1]))
        p = _softmax(logit)
        y_ = self.calibrator.fit_transform(p.flatten(), label.flatten())
        return y_.reshape(logit.shape) + 1e-9 * p

    def transform(self, logit):
        p = _softmax(logit)
        return self.calibrator.predict(p.flatten()).reshape(logit.shape) + 1e-9 * p


def oracle_density_ratio(val_probs, val_labels, val_prox, probs, prox):
    """``DensityRatioCalibration.fit`` + ``predict`` of density_ratio_calibration.py, re-typed."""
    confs, preds = val_probs.max(-1), val_probs.argmax(-1)
    right = preds == val_labels
    dens_true = KDEMultivariate(data=[confs[right], val_prox[right]], var_type="cc", bw="normal_reference")
    dens_false = KDEMultivariate(data=[confs[~right], val_prox[~right]], var_type="cc", bw="normal_reference")
    ratio = (~right).sum() / right.sum()
    preds, confs = probs.argmax(-1), probs.max(-1)
    data = np.array([confs, prox]).T
    f_true, f_false = dens_true.pdf(data), dens_false.pdf(data)
    calibrated = f_true / np.maximum(f_true + f_false * ratio, 1e-10)
    mask = np.ones(probs.shape, dtype=bool)
    mask[range(probs.shape[0]), preds] = False
    probs = probs * mask
    probs = probs * ((1 - calibrated) / probs.sum(axis=-1))[:, None]
    probs[range(probs.shape[0]), preds] = calibrated
    return probs


def oracle_bin_mean_shift(val_logits, val_prox, val_labels, logits, prox, n_bins=5):
    """``BinMeanShift('multi_isotonic_regression', MultiIsotonicRegression, bin_strategy='quantile')``, re-typed."""
    edges = np.asarray(np.percentile(val_prox, np.linspace(0, 100, n_bins + 1)))
    bin_no = np.searchsorted(edges[1:-1], val_prox, side="right")
    calibrators = [OracleMultiIsotonic() for _ in range(n_bins)]
    for b in range(n_bins):
        calibrators[b].fit_transform(val_logits[bin_no == b], val_labels[bin_no == b])
    bin_no = np.searchsorted(edges[1:-1], prox, side="right")
    indices = [np.flatnonzero(bin_no == b) for b in range(n_bins)]
    probs = np.concatenate([calibrators[b].transform(logits[idx]) for b, idx in enumerate(indices)])
    return probs[np.argsort(np.concatenate(indices))]


def _data(seed, n, n_classes=6, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((n, n_classes))
    labels = np.array([rng.choice(n_classes, p=p) for p in _softmax(0.7 * logits)])
    features = rng.standard_normal((n, 8))
    return logits, labels, features / np.linalg.norm(features, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_isotonic_equals_the_public_code(seed):
    val_logits, val_labels, _ = _data(seed, 60)
    test_logits, _, _ = _data(seed + 10, 200, scale=4.0)
    oracle = OracleMultiIsotonic()
    fitted = oracle.fit_transform(val_logits, val_labels)
    ours = MultiIsotonicRegression().fit(torch.from_numpy(val_logits), torch.from_numpy(val_labels))
    np.testing.assert_allclose(ours.predict_proba(torch.from_numpy(val_logits)).numpy(), fitted, rtol=0, atol=1e-12)
    expected = oracle.transform(test_logits)
    np.testing.assert_allclose(ours.predict_proba(test_logits).numpy(), expected, rtol=0, atol=1e-12)
    # transform: logits whose softmax is the renormalised output
    renormalised = torch.softmax(ours.transform(test_logits), dim=1).numpy()
    np.testing.assert_allclose(renormalised, expected / expected.sum(1, keepdims=True), rtol=1e-12, atol=1e-15)


def test_proximity_equals_the_public_knn_distances():
    _, _, val = _data(3, 40)
    _, _, test = _data(4, 25)
    k = 5
    # get_knn_dists: per test feature, the k smallest norms to the validation features; then exp(-mean)
    expected = np.exp(-np.array([np.sort(np.linalg.norm(val - f, axis=1))[:k] for f in test]).mean(1))
    np.testing.assert_allclose(proximity(test, val, k).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(knn_mean_distance(test, val, k).numpy(), -np.log(expected), rtol=1e-12)
    # get_val_image_knn_dists: the k + 1 smallest norms within the validation features, the first (itself) dropped
    expected_val = np.exp(-np.array([np.sort(np.linalg.norm(val - f, axis=1))[1 : k + 1] for f in val]).mean(1))
    np.testing.assert_allclose(self_proximity(val, k).numpy(), expected_val, rtol=1e-12)
    with pytest.raises(ValueError, match="`k`"):
        self_proximity(val[:5], k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_density_ratio_calibration_equals_the_public_code(seed):
    val_logits, val_labels, val_features = _data(seed, 80)
    test_logits, _, test_features = _data(seed + 20, 150)
    val_prox = self_proximity(val_features).numpy()
    test_prox = proximity(test_features, val_features).numpy()
    expected = oracle_density_ratio(_softmax(val_logits), val_labels, val_prox, _softmax(test_logits), test_prox)
    ours = DensityRatioCalibration().fit(val_logits, val_labels, val_prox)
    np.testing.assert_allclose(ours.predict_proba(test_logits, test_prox).numpy(), expected, rtol=0, atol=1e-9)
    # transform: the same confidences, kept within [1e-6, 1 - 1e-6] for finite log-probabilities
    top = torch.softmax(ours.transform(test_logits, test_prox), 1).max(1).values.numpy()
    np.testing.assert_allclose(top, np.clip(expected.max(1), 1e-6, 1 - 1e-6), rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_proximity_isotonic_regression_equals_the_public_bin_mean_shift(seed):
    val_logits, val_labels, val_features = _data(seed, 100)
    test_logits, _, test_features = _data(seed + 30, 120)
    val_prox = self_proximity(val_features).numpy()
    test_prox = proximity(test_features, val_features).numpy()
    expected = oracle_bin_mean_shift(val_logits, val_prox, val_labels, test_logits, test_prox)
    ours = ProximityIsotonicRegression().fit(val_logits, val_labels, val_prox)
    assert ours.empty_bins_ == []
    np.testing.assert_allclose(ours.predict_proba(test_logits, test_prox).numpy(), expected, rtol=0, atol=1e-12)


def test_proximity_isotonic_regression_uses_the_pooled_fit_for_an_empty_bin():
    val_logits, val_labels, _ = _data(5, 30)
    # 20 ties at 0.5: the quantile edges are [0.5, 0.5, 0.5, 0.5, ~0.65, 0.9], so bins 0-2 hold nobody and a test
    # proximity below 0.5 falls in bin 0
    val_prox = np.r_[np.full(20, 0.5), np.linspace(0.6, 0.9, 10)]
    ours = ProximityIsotonicRegression().fit(val_logits, val_labels, val_prox)
    assert ours.empty_bins_ == [0, 1, 2]
    pooled = MultiIsotonicRegression().fit(val_logits, val_labels)
    np.testing.assert_array_equal(
        ours.predict_proba(val_logits[:4], np.full(4, 0.4)).numpy(), pooled.predict_proba(val_logits[:4]).numpy()
    )


def test_density_ratio_refuses_a_split_without_errors_and_use_before_fit():
    logits = np.eye(4)[np.arange(12) % 4] * 5.0
    with pytest.raises(ValueError, match="0 wrongly classified validation image"):
        DensityRatioCalibration().fit(logits, np.arange(12) % 4, np.linspace(0.1, 0.9, 12))
    with pytest.raises(NotFittedError):
        DensityRatioCalibration().predict_proba(logits, np.ones(12))
    with pytest.raises(ValueError, match="`proximity`"):
        ProximityIsotonicRegression().fit(logits, np.arange(12) % 4, np.ones(5))


@pytest.mark.parametrize("seed", [0, 1])
def test_pool_adjacent_violators_equals_scikit_learn_on_ties_runs_and_real_targets(seed):
    from calprompt.calibration.recalibration import fit_isotonic, interpolate_knots

    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(0, 1, 400), 2)  # many tied x
    y = np.r_[np.round(rng.uniform(0, 1, 200), 1), np.repeat(rng.uniform(0, 1, 20), 10)]  # runs of equal targets
    knots, values = fit_isotonic(torch.from_numpy(x), torch.from_numpy(y))
    at = rng.uniform(-0.1, 1.1, 300)
    expected = IsotonicRegression(out_of_bounds="clip").fit(x, y).predict(at)
    np.testing.assert_allclose(interpolate_knots(knots, values, torch.from_numpy(at)).numpy(), expected, atol=1e-12)
