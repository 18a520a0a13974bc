"""Accuracy, NLL, Brier and harmonic mean against numpy / torch cross-entropy and hand-computed values."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calprompt.metrics import accuracy, brier_score, harmonic_mean, negative_log_likelihood


def random_case(seed: int = 0, n: int = 400, n_classes: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, n_classes, generator=generator, dtype=torch.float64)
    return logits, torch.randint(0, n_classes, (n,), generator=generator)


def test_accuracy_matches_numpy():
    logits, labels = random_case()
    expected = np.mean(logits.numpy().argmax(axis=1) == labels.numpy())
    assert float(accuracy(logits.softmax(1), labels)) == pytest.approx(expected, abs=1e-12)


def test_nll_matches_cross_entropy():
    logits, labels = random_case(1)
    expected = F.cross_entropy(logits, labels)
    assert float(negative_log_likelihood(logits.softmax(1), labels)) == pytest.approx(float(expected), abs=1e-10)


def test_nll_of_a_zero_true_probability_is_finite():
    probs = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert 700 < float(negative_log_likelihood(probs, torch.tensor([1]))) < 710


def test_brier_matches_explicit_one_hot():
    logits, labels = random_case(2)
    probs = logits.softmax(1).numpy()
    one_hot = np.eye(probs.shape[1])[labels.numpy()]
    expected = np.mean(np.sum((probs - one_hot) ** 2, axis=1))
    assert float(brier_score(torch.from_numpy(probs), labels)) == pytest.approx(expected, abs=1e-12)


def test_brier_hand_values():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert float(brier_score(probs, torch.tensor([0, 0]))) == pytest.approx(1.0)  # (0 + 2) / 2


@pytest.mark.parametrize(
    ("base", "novel", "expected"), [(0.8, 0.6, 0.96 / 1.4), (80.0, 60.0, 96 / 1.4), (0.0, 0.0, 0.0), (0.5, 0.0, 0.0)]
)
def test_harmonic_mean(base, novel, expected):
    assert harmonic_mean(base, novel) == pytest.approx(expected)


def test_harmonic_mean_rejects_negative():
    with pytest.raises(ValueError, match="Expected `novel`"):
        harmonic_mean(0.5, -0.1)
