"""Binned calibration errors against torchmetrics, a numpy equal-mass oracle, naive loops and hand-computed values."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from calprompt.metrics import (
    adaptive_calibration_error,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    reliability_bins,
)


def random_probs(n: int, n_classes: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=generator)
    logits = scale * torch.randn(n, n_classes, generator=generator, dtype=torch.float64)
    logits[torch.arange(n), labels] += 1.5  # better than chance, so bins have mixed correctness
    return logits.softmax(dim=1), labels


def on_an_edge(values: torch.Tensor, n_bins: int) -> bool:
    scaled = values * n_bins
    return bool((scaled - scaled.round()).abs().min() < 1e-9)


@pytest.mark.parametrize(("n", "n_classes", "n_bins", "seed"), [(500, 3, 10, 0), (2000, 10, 15, 1), (777, 50, 7, 2)])
def test_ece_and_mce_match_torchmetrics(n, n_classes, n_bins, seed):
    probs, labels = random_probs(n, n_classes, seed)
    assert not on_an_edge(probs.max(dim=1).values, n_bins)
    expected_ece = multiclass_calibration_error(probs, labels, n_classes, n_bins=n_bins, norm="l1")
    expected_mce = multiclass_calibration_error(probs, labels, n_classes, n_bins=n_bins, norm="max")
    assert float(expected_calibration_error(probs, labels, n_bins)) == pytest.approx(float(expected_ece), abs=1e-6)
    assert float(maximum_calibration_error(probs, labels, n_bins)) == pytest.approx(float(expected_mce), abs=1e-6)


def test_float32_numpy_input_matches_torchmetrics():
    probs, labels = random_probs(1000, 5, seed=3)
    probs32 = probs.float()
    probs32 = probs32 / probs32.sum(dim=1, keepdim=True)
    expected = multiclass_calibration_error(probs32, labels, 5, n_bins=10, norm="l1")
    ours = expected_calibration_error(probs32.numpy(), labels.numpy())
    assert float(ours) == pytest.approx(float(expected), abs=1e-6)


def numpy_adaptive_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    order = np.argsort(confidence, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, n_bins):
        if len(chunk):
            total += len(chunk) * abs(correct[chunk].mean() - confidence[chunk].mean())
    return total / len(labels)


@pytest.mark.parametrize(("n", "n_bins"), [(1000, 10), (1003, 15), (7, 10), (64, 3)])
def test_adaptive_ece_matches_equal_mass_oracle(n, n_bins):
    probs, labels = random_probs(n, 6, seed=n)
    expected = numpy_adaptive_ece(probs.numpy(), labels.numpy(), n_bins)
    assert float(adaptive_calibration_error(probs, labels, n_bins)) == pytest.approx(expected, abs=1e-6)


def naive_classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Loop form of Kull et al.'s classwise ECE with the documented (lo, hi] convention, 0 in the first bin."""
    n, n_classes = probs.shape
    edges = [k / n_bins for k in range(n_bins + 1)]
    per_class = []
    for c in range(n_classes):
        error = 0.0
        for b in range(n_bins):
            members = [i for i in range(n) if edges[b] < probs[i, c] <= edges[b + 1] or (b == 0 and probs[i, c] == 0)]
            if members:
                freq = sum(labels[i] == c for i in members) / len(members)
                mean_p = sum(probs[i, c] for i in members) / len(members)
                error += len(members) / n * abs(freq - mean_p)
        per_class.append(error)
    return sum(per_class) / n_classes


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n_bins", [10, 3])
def test_classwise_ece_matches_naive_loop(dtype, n_bins):
    probs, labels = random_probs(300, 7, seed=4)
    probs = probs.to(dtype)
    expected = naive_classwise_ece(probs.double().numpy(), labels.numpy(), n_bins)
    assert float(classwise_calibration_error(probs, labels, n_bins)) == pytest.approx(expected, abs=1e-9)


def test_classwise_ece_with_no_probability_above_the_first_bin():
    probs = torch.full((6, 30), 1 / 30, dtype=torch.float64)  # every entry in bin 0 (below 0.05)
    labels = torch.arange(6)
    expected = naive_classwise_ece(probs.numpy(), labels.numpy(), 10)
    assert float(classwise_calibration_error(probs, labels)) == pytest.approx(expected, abs=1e-12)


def test_classwise_ece_convention_with_zeros_ones_and_edge_values():
    probs = torch.tensor(
        [[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 0.75, 0.25], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64
    )
    labels = torch.tensor([0, 1, 1, 2, 2])
    for n_bins in (2, 4, 10):
        expected = naive_classwise_ece(probs.numpy(), labels.numpy(), n_bins)
        assert float(classwise_calibration_error(probs, labels, n_bins)) == pytest.approx(expected, abs=1e-12)


# Edge convention: bins (lo, hi], a value on an inner edge goes to the bin below, 1.0 to the last bin.
EDGE_PROBS = torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)  # conf 0.5, 0.75, 1.0
EDGE_LABELS = torch.tensor([0, 0, 1])  # correct, wrong, correct


def test_edge_confidences_land_in_the_documented_bins():
    bins = reliability_bins(EDGE_PROBS, EDGE_LABELS, n_bins=2)
    assert bins.edges == [0.0, 0.5, 1.0]
    assert bins.counts == [1, 2]  # 0.5 -> (0, 0.5]; 0.75 and 1.0 -> (0.5, 1]
    assert bins.accuracy == [1.0, 0.5]
    assert bins.confidence == [0.5, 0.875]
    quarter = reliability_bins(EDGE_PROBS, EDGE_LABELS, n_bins=4)
    assert quarter.counts == [0, 1, 1, 1]  # 0.5 in (0.25, 0.5], 0.75 in (0.5, 0.75], 1.0 in (0.75, 1]
    assert quarter.accuracy[0] is None and quarter.confidence[0] is None


def test_edge_confidences_hand_computed_ece_and_mce():
    # bin (0, 0.5]: {0.5 correct} gap 0.5; bin (0.5, 1]: {0.75 wrong, 1.0 correct} acc 0.5, conf 0.875, gap 0.375.
    assert float(expected_calibration_error(EDGE_PROBS, EDGE_LABELS, 2)) == pytest.approx(0.5 / 3 + 2 / 3 * 0.375)
    assert float(maximum_calibration_error(EDGE_PROBS, EDGE_LABELS, 2)) == pytest.approx(0.5)


def test_value_just_above_an_edge_moves_up():
    probs = torch.tensor([[0.5 + 1e-12, 0.5 - 1e-12]], dtype=torch.float64)
    assert reliability_bins(probs, torch.tensor([0]), n_bins=2).counts == [0, 1]


def test_perfectly_confident_and_correct_is_calibrated():
    probs = torch.eye(4, dtype=torch.float64)
    labels = torch.arange(4)
    for metric in (expected_calibration_error, maximum_calibration_error, adaptive_calibration_error):
        assert float(metric(probs, labels)) == 0.0
    assert float(classwise_calibration_error(probs, labels)) == 0.0


def test_results_are_float64_tensors_on_the_input_device():
    probs, labels = random_probs(50, 3, seed=6)
    result = expected_calibration_error(probs.float() / probs.float().sum(1, keepdim=True), labels)
    assert isinstance(result, torch.Tensor) and result.ndim == 0
    assert result.dtype == torch.float64 and result.device == probs.device
