"""SaLS, top-label histogram binning and isotonic regression against independent oracles (a numpy formula, netcal,
scikit-learn), their declared top-1 behaviour, and their errors."""

import numpy as np
import pytest
import torch

from calprompt.calibration.posthoc import (
    DistanceAwareCalibration,
    NotFittedError,
    TemperatureScaling,
    ZeroShotLogitScaling,
)
from calprompt.calibration.recalibration import CONFIDENCE_FLOOR, HistogramBinning, IsotonicCalibration

netcal_binning = pytest.importorskip("netcal.binning")
sklearn_isotonic = pytest.importorskip("sklearn.isotonic")


def _case(seed: int, n: int = 600, n_classes: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(n, n_classes, generator=generator, dtype=torch.float64)
    labels = torch.multinomial((0.5 * logits).softmax(1), 1, generator=generator).squeeze(1)  # over-confident logits
    return logits, labels


def _top_label(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    probs = logits.softmax(1)
    return probs.max(1).values.numpy(), (probs.argmax(1) == labels).double().numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_sals_matches_the_published_formula_and_keeps_top1(seed):
    logits, _ = _case(seed)
    zs_logits = 20 + 5 * torch.randn(
        logits.shape, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64
    )
    got = ZeroShotLogitScaling().transform(logits, zs_logits).numpy()
    z, z0 = logits.numpy(), zs_logits.numpy()
    low, high = z.min(1, keepdims=True), z.max(1, keepdims=True)
    expected = (z - low) / (high - low) * (z0.max(1, keepdims=True) - z0.min(1, keepdims=True)) + z0.min(
        1, keepdims=True
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert np.array_equal(got.argmax(1), z.argmax(1))
    assert ZeroShotLogitScaling.preserves_top1 and ZeroShotLogitScaling.transfers_to_novel


def test_sals_refuses_zero_shot_logits_of_another_shape():
    logits, _ = _case(0)
    with pytest.raises(ValueError, match="zs_logits"):
        ZeroShotLogitScaling().transform(logits, logits[:, :3])


@pytest.mark.parametrize(("seed", "n_bins"), [(0, 10), (1, 15), (2, 5)])
def test_histogram_binning_matches_netcal(seed, n_bins):
    val_logits, val_labels = _case(seed)
    test_logits, _ = _case(seed + 100, n=900)
    binning = HistogramBinning(n_bins).fit(val_logits, val_labels)
    conf, correct = _top_label(val_logits, val_labels)
    oracle = netcal_binning.HistogramBinning(bins=n_bins).fit(conf, correct)
    test_conf = test_logits.softmax(1).max(1).values
    expected = np.clip(oracle.transform(test_conf.numpy()), CONFIDENCE_FLOOR, 1 - CONFIDENCE_FLOOR)
    got = binning.transform(test_logits).exp()
    predicted = got.gather(1, test_logits.argmax(1, keepdim=True)).squeeze(1)  # the original top label's new value
    np.testing.assert_allclose(predicted.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(got.sum(1).numpy(), 1.0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotonic_matches_scikit_learn(seed):
    val_logits, val_labels = _case(seed)
    test_logits, _ = _case(seed + 100, n=900)
    isotonic = IsotonicCalibration().fit(val_logits, val_labels)
    conf, correct = _top_label(val_logits, val_labels)
    oracle = sklearn_isotonic.IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(conf, correct)
    test_conf = test_logits.softmax(1).max(1).values
    expected = np.clip(oracle.predict(test_conf.numpy()), CONFIDENCE_FLOOR, 1 - CONFIDENCE_FLOOR)
    got = isotonic.transform(test_logits).exp().gather(1, test_logits.argmax(1, keepdim=True)).squeeze(1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_isotonic_handles_tied_confidences_like_scikit_learn():
    conf = np.repeat(np.linspace(0.55, 0.95, 7), 5)  # top label: class 0
    correct = (np.random.default_rng(0).uniform(size=35) < conf).astype(np.float64)
    logits = torch.from_numpy(np.log(np.stack([conf, 1 - conf], 1)))
    labels = torch.from_numpy(np.where(correct > 0, 0, 1))
    isotonic = IsotonicCalibration().fit(logits, labels)
    oracle = sklearn_isotonic.IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(conf, correct)
    grid = torch.linspace(0.5, 1.0, 41, dtype=torch.float64)
    np.testing.assert_allclose(isotonic.calibrated_confidence(grid).numpy(), oracle.predict(grid.numpy()), atol=1e-12)


@pytest.mark.parametrize("calibrator", [HistogramBinning(), IsotonicCalibration()])
def test_top_label_recalibrators_keep_top1_unless_the_new_confidence_drops_below_a_rival(calibrator):
    val_logits, val_labels = _case(3)
    test_logits, _ = _case(4, n=2000)
    calibrator.fit(val_logits, val_labels)
    probs = test_logits.softmax(1)
    new = calibrator.transform(test_logits).exp()
    target = calibrator.calibrated_confidence(probs.max(1).values).clamp(CONFIDENCE_FLOOR, 1 - CONFIDENCE_FLOOR)
    top2 = probs.topk(2, dim=1).values
    rival = top2[:, 1] * (1 - target) / (1 - top2[:, 0])
    keeps = target > rival
    assert torch.equal(new.argmax(1)[keeps], probs.argmax(1)[keeps])
    assert not calibrator.preserves_top1 and calibrator.transfers_to_novel


def test_calibrators_that_claim_to_keep_top1_do_so():
    logits, labels = _case(5, n=1000)
    ts = TemperatureScaling().fit(logits, labels)
    assert torch.equal(ts.transform(logits).argmax(1), logits.argmax(1))
    features = torch.randn(12, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dac = DistanceAwareCalibration().fit(features[:7], features[:7] + 0.1)
    novel = torch.randn(1000, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    weighted = dac.transform(novel, features[7:], features[7:] * 1.3)
    assert torch.equal(weighted.argmax(1), novel.argmax(1))
    for calibrator in (TemperatureScaling, DistanceAwareCalibration, ZeroShotLogitScaling):
        assert calibrator.preserves_top1


@pytest.mark.parametrize("calibrator", [HistogramBinning(), IsotonicCalibration()])
def test_recalibrators_refuse_use_before_fit(calibrator):
    with pytest.raises(NotFittedError):
        calibrator.transform(torch.zeros(2, 3))


def test_histogram_binning_refuses_bad_bins():
    with pytest.raises(ValueError, match="n_bins"):
        HistogramBinning(0)
