"""Temperature scaling and DAC: known-temperature recovery, grid-search oracle, hand-evaluated DAC formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from calprompt.calibration.posthoc import DistanceAwareCalibration, NotFittedError, TemperatureScaling


def calibrated_case(n: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z and labels drawn from softmax(z): z is calibrated by construction."""
    generator = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, n_classes, generator=generator, dtype=torch.float64)
    labels = torch.multinomial(z.softmax(dim=1), 1, generator=generator).squeeze(1)
    return z, labels


@pytest.mark.parametrize(("true_t", "seed"), [(0.5, 0), (1.0, 1), (2.5, 2), (4.0, 3)])
def test_temperature_scaling_recovers_a_known_temperature(true_t, seed):
    z, labels = calibrated_case(20000, 10, seed)
    scaler = TemperatureScaling().fit(true_t * z, labels)
    assert abs(scaler.temperature_ - true_t) / true_t < 0.02
    assert isinstance(scaler.temperature_, float)


def test_temperature_scaling_finds_the_nll_minimum_of_a_grid_search():
    z, labels = calibrated_case(3000, 5, seed=4)
    logits = (1.7 * z).float()

    def grid_argmin(grid: torch.Tensor) -> float:
        nll = torch.stack([F.cross_entropy(logits.double() / t, labels) for t in grid])
        return grid[nll.argmin()].item()

    coarse = grid_argmin(torch.linspace(0.5, 4.0, 351, dtype=torch.float64))  # step 0.01; NLL is unimodal in T
    best = grid_argmin(torch.linspace(coarse - 0.01, coarse + 0.01, 201, dtype=torch.float64))  # step 1e-4
    fitted = TemperatureScaling(init_temperature=3.0).fit(logits, labels).temperature_
    assert fitted == pytest.approx(best, abs=2e-4)


def test_temperature_scaling_never_changes_predictions():
    z, labels = calibrated_case(2000, 7, seed=5)
    logits = (3.0 * z).float()
    scaled = TemperatureScaling().fit(logits, labels).transform(logits)
    assert torch.equal(scaled.argmax(dim=1), logits.argmax(dim=1))
    assert scaled.dtype == logits.dtype and scaled.device == logits.device


def test_temperature_scaling_works_under_inference_mode():
    z, labels = calibrated_case(500, 4, seed=6)
    with torch.inference_mode():
        logits = 2.0 * z
        scaler = TemperatureScaling().fit(logits, labels)
    assert scaler.temperature_ == pytest.approx(2.0, rel=0.2)


def test_temperature_scaling_warns_on_separable_data():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]] * 10)
    labels = torch.tensor([0, 1] * 10)
    with pytest.warns(RuntimeWarning, match="no finite minimiser"):
        scaler = TemperatureScaling().fit(logits, labels)
    assert scaler.temperature_ < 1.0  # sharpened, as far as the optimiser went


def test_unfitted_calibrators_refuse_to_transform():
    with pytest.raises(NotFittedError, match="TemperatureScaling is not fitted"):
        TemperatureScaling().transform(torch.zeros(2, 3))
    with pytest.raises(NotFittedError, match="DistanceAwareCalibration is not fitted"):
        DistanceAwareCalibration().transform(torch.zeros(2, 3), torch.ones(3, 4), torch.ones(3, 4))
    assert issubclass(NotFittedError, RuntimeError)


@pytest.mark.parametrize("kwargs", [{"init_temperature": 0.0}, {"init_temperature": -1.0}, {"max_iter": 0}])
def test_temperature_scaling_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="Expected"):
        TemperatureScaling(**kwargs)


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def as64(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def hand_dac_weight(zs, tuned, base_zs, base_tuned, k, threshold):
    """The DAC formula, evaluated directly with math.dist on already normalised 2-D features."""
    d_zs = sorted(math.dist(zs, b) for b in base_zs)[:k]
    d_ft = sorted(math.dist(tuned, b) for b in base_tuned)[:k]
    if d_ft[0] < threshold:
        return 1.0
    return math.exp(sum(d_zs) / k - sum(d_ft) / k)


# Base classes at 0, 90, 180 degrees zero-shot; tuning rotated them by 10 degrees.
BASE_ZS = [unit(0), unit(90), unit(180)]
BASE_TUNED = [unit(10), unit(100), unit(190)]
# Test classes: one far novel class whose tuned feature drifted away, one that moved closer, and base class 1 itself.
TEST_ZS = [unit(45), unit(225), unit(90)]
TEST_TUNED = [unit(-60), unit(170), unit(100)]


def test_dac_weights_match_the_formula_on_a_hand_built_example():
    k, threshold = 2, 0.05
    dac = DistanceAwareCalibration(k=k, base_threshold=threshold)
    # Scaled inputs: DAC must L2-normalise them itself.
    dac.fit(3.0 * as64(BASE_ZS), 0.5 * as64(BASE_TUNED))
    weights = dac.class_weights(2.0 * as64(TEST_ZS), as64(TEST_TUNED))
    expected = [
        hand_dac_weight(zs, tuned, BASE_ZS, BASE_TUNED, k, threshold)
        for zs, tuned in zip(TEST_ZS, TEST_TUNED, strict=True)
    ]
    assert weights.tolist() == pytest.approx(expected, abs=1e-9)
    assert expected[0] < 1 < expected[1] and expected[2] == 1.0  # drifted, moved closer, base class

    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 1.0], [-2.0, -3.0, -1.0]])
    calibrated = dac.transform(logits, as64(TEST_ZS), as64(TEST_TUNED))
    for row, predicted in zip(range(3), (0, 1, 2), strict=True):
        assert calibrated[row].tolist() == pytest.approx((logits[row] * expected[predicted]).tolist(), abs=1e-6)


def random_features(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_dac_is_the_identity_on_base_classes():
    base_zs, base_tuned = random_features(12, 16, 0), random_features(12, 16, 1)
    dac = DistanceAwareCalibration().fit(base_zs, base_tuned)
    logits = 10 * random_features(50, 12, 2)
    assert torch.equal(dac.class_weights(base_zs, base_tuned), torch.ones(12, dtype=torch.float64))
    assert torch.equal(dac.transform(logits, base_zs, base_tuned), logits)


def test_dac_never_changes_predictions_and_stacks_with_temperature_scaling():
    dac = DistanceAwareCalibration().fit(random_features(20, 32, 3), random_features(20, 32, 4))
    novel_zs, novel_tuned = random_features(15, 32, 5), random_features(15, 32, 6)
    logits = 5 * random_features(400, 15, 7)  # includes rows whose largest logit is negative
    calibrated = dac.transform(logits, novel_zs, novel_tuned)
    assert torch.equal(calibrated.argmax(dim=1), logits.argmax(dim=1))
    assert not torch.allclose(calibrated, logits)
    labels = logits.argmax(dim=1)
    scaler = TemperatureScaling().fit(logits + random_features(400, 15, 8), labels)
    stacked = dac.transform(scaler.transform(logits), novel_zs, novel_tuned)
    assert torch.allclose(stacked, scaler.transform(calibrated), rtol=1e-6)


def test_dac_rejects_k_above_the_number_of_base_classes():
    with pytest.raises(ValueError, match=r"Expected `k` to be at most the number of base classes \(3\)"):
        DistanceAwareCalibration(k=5).fit(torch.tensor(BASE_ZS), torch.tensor(BASE_TUNED))


def test_dac_rejects_mismatched_shapes():
    dac = DistanceAwareCalibration(k=2).fit(torch.tensor(BASE_ZS), torch.tensor(BASE_TUNED))
    with pytest.raises(ValueError, match="Expected `tuned_text`"):
        dac.class_weights(torch.ones(3, 2), torch.ones(4, 2))
    with pytest.raises(ValueError, match="Expected `zs_text` to be features of dimension 2"):
        dac.class_weights(torch.ones(3, 5), torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"Expected `logits` to be of shape \(N, 3\)"):
        dac.transform(torch.ones(4, 2), torch.ones(3, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match="Expected `base_tuned_text`"):
        DistanceAwareCalibration(k=2).fit(torch.ones(3, 2), torch.ones(3, 4))
