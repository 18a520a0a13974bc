"""`evaluate` / `evaluate_probs`: values against independent oracles, JSON round trip and input validation."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from calprompt.metrics import (
    EvaluationReport,
    adaptive_calibration_error,
    classwise_calibration_error,
    evaluate,
    evaluate_probs,
    excess_aurc,
    risk_coverage_curve,
)


@pytest.fixture(scope="module")
def case() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 12, (1500,), generator=generator)
    logits = 2.5 * torch.randn(1500, 12, generator=generator)
    logits[torch.arange(1500), labels] += 2.0
    return logits, labels


def test_report_values_match_oracles(case):
    logits, labels = case
    report = evaluate(logits, labels, n_bins=15)
    probs = logits.double().softmax(1)
    assert (report.n, report.n_classes, report.n_bins) == (1500, 12, 15)
    assert report.accuracy == pytest.approx(float((logits.argmax(1) == labels).double().mean()), abs=1e-12)
    tm_ece = multiclass_calibration_error(probs, labels, 12, n_bins=15, norm="l1")
    tm_mce = multiclass_calibration_error(probs, labels, 12, n_bins=15, norm="max")
    assert report.ece == pytest.approx(float(tm_ece), abs=1e-6)
    assert report.mce == pytest.approx(float(tm_mce), abs=1e-6)
    assert report.nll == pytest.approx(float(F.cross_entropy(logits.double(), labels)), abs=1e-9)
    one_hot = np.eye(12)[labels.numpy()]
    assert report.brier == pytest.approx(float(np.mean(np.sum((probs.numpy() - one_hot) ** 2, axis=1))), abs=1e-9)
    # These three have their own oracle tests; evaluate must agree with the standalone functions.
    assert report.adaptive_ece == pytest.approx(float(adaptive_calibration_error(probs, labels, 15)), abs=1e-12)
    assert report.classwise_ece == pytest.approx(float(classwise_calibration_error(probs, labels, 15)), abs=1e-12)
    _, risk = risk_coverage_curve(probs, labels)
    assert report.aurc == pytest.approx(float(risk.mean()), abs=1e-12)
    assert report.e_aurc == pytest.approx(float(excess_aurc(probs, labels)), abs=1e-12)


def test_reliability_bins_in_the_report(case):
    logits, labels = case
    report = evaluate(logits, labels)
    conf = logits.double().softmax(1).max(1).values.numpy()
    counts, _ = np.histogram(conf, bins=np.linspace(0, 1, 11))  # no confidence sits on an edge here
    assert report.reliability.counts == counts.tolist()
    bins = report.reliability
    weighted_gap = sum(n * abs(a - c) for n, a, c in zip(bins.counts, bins.accuracy, bins.confidence, strict=True) if n)
    assert weighted_gap / report.n == pytest.approx(report.ece, abs=1e-12)


def test_risk_coverage_is_sampled_every_five_percent(case):
    logits, labels = case
    report = evaluate(logits, labels)
    _, risk = risk_coverage_curve(logits.double().softmax(1), labels)
    assert report.risk_coverage.coverage == pytest.approx([k / 20 for k in range(1, 21)])
    expected = [risk[math.ceil(k * 1500 / 20) - 1].item() for k in range(1, 21)]
    assert report.risk_coverage.risk == pytest.approx(expected, abs=1e-12)


def test_json_round_trip(case):
    logits, labels = case
    report = evaluate(logits[:7], labels[:7])  # few samples: some reliability bins are empty (None)
    text = json.dumps(report.to_dict(), allow_nan=False)
    restored = EvaluationReport.from_dict(json.loads(text))
    assert restored == report
    assert None in restored.reliability.accuracy


def test_from_dict_names_missing_keys(case):
    data = evaluate(*case).to_dict()
    del data["ece"]
    with pytest.raises(ValueError, match="Expected `EvaluationReport`"):
        EvaluationReport.from_dict(data)


def test_numpy_input_and_probabilities_agree(case):
    logits, labels = case
    from_torch = evaluate(logits, labels)
    assert evaluate(logits.numpy(), labels.numpy()) == from_torch
    from_probs = evaluate_probs(logits.double().softmax(1), labels)
    for name in ("accuracy", "ece", "adaptive_ece", "mce", "classwise_ece", "nll", "brier", "aurc", "e_aurc"):
        assert getattr(from_probs, name) == pytest.approx(getattr(from_torch, name), abs=1e-9)


def test_nll_from_logits_is_exact_when_the_softmax_underflows():
    # p(class 0) is exp(-200) (float32 underflow) in row 0 and exp(-1000) (float64 underflow) in row 1.
    logits = torch.tensor([[0.0, 200.0], [0.0, 1000.0], [3.0, 1.0]])
    labels = torch.tensor([0, 0, 0])
    expected = F.cross_entropy(logits.double(), labels).item()
    assert expected == pytest.approx((200 + 1000 + math.log1p(math.exp(-2))) / 3)
    assert evaluate(logits, labels).nll == pytest.approx(expected, rel=1e-12)


def test_confidence_exactly_one_counts_in_the_last_bin():
    logits = torch.tensor([[0.0, 1000.0], [0.0, 1000.0]])  # softmax gives exactly 1.0 in float64
    report = evaluate(logits, torch.tensor([1, 0]))
    assert report.reliability.counts == [0] * 9 + [2]
    assert report.ece == pytest.approx(0.5) and report.mce == pytest.approx(0.5)


NAN = float("nan")


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "non-empty"),
        (torch.zeros(4, 0), torch.zeros(4, dtype=torch.long), "non-empty"),
        (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), "of length 4"),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), r"class indices in \[0, 2\]"),
        (torch.zeros(4, 3), torch.tensor([0, -1, 2, 1]), r"class indices in \[0, 2\]"),
        (torch.tensor([[0.0, NAN], [1.0, 2.0]]), torch.tensor([0, 1]), "finite"),
        (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), torch.tensor([0, 1]), "finite"),
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), "2-D"),
        (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long), "floating-point"),
        (torch.zeros(4, 3), torch.zeros(4), "integer array"),
        ([[0.0, 1.0]], [0], "torch.Tensor or numpy.ndarray"),
    ],
)
def test_invalid_input_raises_a_clear_value_error(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        evaluate(logits, labels)


@pytest.mark.parametrize(
    ("probs", "message"),
    [(torch.tensor([[0.7, 0.7]]), "sum to 1"), (torch.tensor([[1.5, -0.5]]), r"in \[0, 1\]")],
)
def test_invalid_probabilities_raise(probs, message):
    with pytest.raises(ValueError, match=message):
        evaluate_probs(probs, torch.tensor([0]))


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_invalid_n_bins_raises(case, n_bins):
    with pytest.raises(ValueError, match="Expected `n_bins`"):
        evaluate(*case, n_bins=n_bins)


def test_chunked_evaluation_equals_a_single_block(monkeypatch):
    """Rows are processed in cache-sized chunks; the report must not depend on where the chunks end."""
    from calprompt.metrics import report as report_module

    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(301, 7, generator=generator) * 4
    labels = torch.randint(0, 7, (301,), generator=generator)
    near = torch.rand(301, generator=generator, dtype=torch.float64)  # PIECE too
    whole = evaluate(logits, labels, n_bins=10, proximity=near).to_dict()
    probs_whole = evaluate_probs(logits.softmax(dim=1), labels, n_bins=10, proximity=near).to_dict()
    monkeypatch.setattr(report_module, "_CHUNK_ELEMENTS", 7 * 13)  # 13 rows per chunk, a ragged last chunk
    chunked = evaluate(logits, labels, n_bins=10, proximity=near).to_dict()
    probs_chunked = evaluate_probs(logits.softmax(dim=1), labels, n_bins=10, proximity=near).to_dict()
    for reference, got in ((whole, chunked), (probs_whole, probs_chunked)):
        assert got["reliability"] == reference["reliability"] and got["risk_coverage"] == reference["risk_coverage"]
        for key, value in reference.items():
            if key == "smooth_reliability":
                assert value["lower"] is None and got[key]["lower"] is None  # no bootstrap asked for
                for part, curve in value.items():
                    if curve is None:
                        continue
                    assert got[key][part] == pytest.approx(curve, rel=1e-12, abs=1e-15), part
            elif key not in ("reliability", "risk_coverage", "intervals"):
                assert value is not None, key
                assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
