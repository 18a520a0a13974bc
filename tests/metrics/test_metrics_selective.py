"""Risk-coverage curve, AURC and E-AURC against naive loops, including brute force over tie orders."""

import itertools

import pytest
import torch

from calprompt.metrics import aurc, excess_aurc, risk_coverage_curve


def naive_risks(correct_in_answer_order: list[bool]) -> list[float]:
    risks, errors = [], 0
    for k, is_correct in enumerate(correct_in_answer_order, start=1):
        errors += not is_correct
        risks.append(errors / k)
    return risks


def two_class_probs(confidences: list[float]) -> torch.Tensor:
    conf = torch.tensor(confidences, dtype=torch.float64)
    return torch.stack([conf, 1 - conf], dim=1)  # predicted class is 0 (confidences > 0.5)


def test_curve_without_ties_matches_naive_loop():
    generator = torch.Generator().manual_seed(0)
    conf = (0.5 + 0.5 * torch.rand(200, generator=generator, dtype=torch.float64)).tolist()
    labels = torch.randint(0, 2, (200,), generator=generator)
    order = sorted(range(200), key=lambda i: -conf[i])
    expected = naive_risks([labels[i].item() == 0 for i in order])
    coverage, risk = risk_coverage_curve(two_class_probs(conf), labels)
    assert risk.tolist() == pytest.approx(expected, abs=1e-12)
    assert coverage.tolist() == pytest.approx([k / 200 for k in range(1, 201)])
    assert float(aurc(two_class_probs(conf), labels)) == pytest.approx(sum(expected) / 200, abs=1e-12)


def test_ties_give_the_average_over_all_tie_orders():
    conf = [0.9, 0.6, 0.9, 0.9, 0.6, 0.7]
    labels = torch.tensor([0, 1, 1, 0, 0, 1])  # correct iff label == 0
    correct = [label == 0 for label in labels.tolist()]
    groups = [[i for i in range(6) if conf[i] == value] for value in sorted(set(conf), reverse=True)]
    curves = []
    for orders in itertools.product(*(itertools.permutations(group) for group in groups)):
        curves.append(naive_risks([correct[i] for order in orders for i in order]))
    expected = [sum(values) / len(curves) for values in zip(*curves, strict=True)]
    _, risk = risk_coverage_curve(two_class_probs(conf), labels)
    assert risk.tolist() == pytest.approx(expected, abs=1e-12)


def test_curve_does_not_depend_on_input_order():
    conf = [0.9, 0.6, 0.9, 0.9, 0.6, 0.7, 0.6]
    labels = torch.tensor([0, 1, 1, 0, 0, 1, 1])
    permutation = torch.tensor([6, 3, 0, 5, 1, 4, 2])
    _, risk = risk_coverage_curve(two_class_probs(conf), labels)
    _, shuffled = risk_coverage_curve(two_class_probs(conf)[permutation], labels[permutation])
    assert risk.tolist() == pytest.approx(shuffled.tolist(), abs=1e-12)


def test_excess_aurc_against_the_oracle_ranking():
    generator = torch.Generator().manual_seed(1)
    conf = (0.5 + 0.5 * torch.rand(100, generator=generator, dtype=torch.float64)).tolist()
    labels = torch.randint(0, 2, (100,), generator=generator)
    correct = [label == 0 for label in labels.tolist()]
    ours = sum(naive_risks([correct[i] for i in sorted(range(100), key=lambda i: -conf[i])])) / 100
    oracle = sum(naive_risks(sorted(correct, reverse=True))) / 100  # every correct sample answered first
    assert float(excess_aurc(two_class_probs(conf), labels)) == pytest.approx(ours - oracle, abs=1e-12)


def test_perfect_ranking_has_zero_excess():
    conf = [0.95, 0.9, 0.8, 0.7, 0.6]
    labels = torch.tensor([0, 0, 0, 1, 1])  # the two least confident are the errors
    assert float(excess_aurc(two_class_probs(conf), labels)) == pytest.approx(0.0, abs=1e-15)
