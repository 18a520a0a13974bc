"""Bootstrap intervals: weighted statistics equal the statistics of explicitly resampled data, coverage of a known
true ECE, seeding, and the report fields (JSON round trip, old reports without them)."""

import json

import numpy as np
import pytest
import torch

from calprompt.metrics import EvaluationReport, evaluate, evaluate_probs
from calprompt.metrics.bootstrap import (
    BOOTSTRAP_STATISTICS,
    bootstrap_top_label,
    resample_counts,
    resampled_statistics,
    top_label_sample,
)


@pytest.fixture(scope="module")
def case() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (400,), generator=generator)
    logits = 2.0 * torch.randn(400, 6, generator=generator, dtype=torch.float64)
    logits[torch.arange(400), labels] += 1.5
    return logits, labels


def test_counts_are_multinomial_resamples():
    counts = torch.cat(list(resample_counts(50, 300, seed=3, device=torch.device("cpu"))))
    assert counts.shape == (300, 50)
    assert torch.equal(counts.sum(1), torch.full((300,), 50.0, dtype=torch.float64))
    assert torch.equal(counts, counts.round()) and bool((counts >= 0).all())
    again = torch.cat(list(resample_counts(50, 300, seed=3, device=torch.device("cpu"))))
    assert torch.equal(counts, again)


def test_weighted_statistics_equal_those_of_the_resampled_data(case, monkeypatch):
    """Each resample's statistics equal evaluate() on the explicitly repeated rows (an independent path)."""
    from calprompt.metrics import bootstrap as bootstrap_module

    monkeypatch.setattr(bootstrap_module, "_BLOCK_ROWS", 3)  # several blocks, a ragged last one
    logits, labels = case
    probs = logits.softmax(1)
    values, _ = resampled_statistics(top_label_sample(probs, labels), 7, seed=11, n_bins=10)
    counts = torch.cat(list(resample_counts(400, 7, seed=11, device=torch.device("cpu"))))
    for row in range(7):
        repeat = torch.repeat_interleave(torch.arange(400), counts[row].long())
        report = evaluate_probs(probs[repeat], labels[repeat])
        for name in BOOTSTRAP_STATISTICS:
            assert float(values[name][row]) == pytest.approx(getattr(report, name), rel=1e-9, abs=1e-12), name


def test_interval_covers_a_known_true_ece():
    """Confidence ~ U(0.5, 1), accuracy = confidence - 0.1: the true (and binned population) ECE is exactly 0.1 and
    the true accuracy 0.65; 200 seeded data sets of n = 1000, 500 resamples each."""
    covered = {"ece": 0, "accuracy": 0}
    for repetition in range(200):
        generator = torch.Generator().manual_seed(10_000 + repetition)
        f = 0.5 + 0.5 * torch.rand(1000, generator=generator, dtype=torch.float64)
        correct = torch.rand(1000, generator=generator, dtype=torch.float64) < f - 0.1
        probs = torch.stack([f, 1 - f], 1)
        labels = torch.where(correct, 0, 1)
        intervals = bootstrap_top_label(
            top_label_sample(probs, labels), n_resamples=500, seed=repetition, statistics=("ece", "accuracy")
        )
        covered["ece"] += intervals["ece"][0] <= 0.1 <= intervals["ece"][1]
        covered["accuracy"] += intervals["accuracy"][0] <= 0.65 <= intervals["accuracy"][1]
    assert 180 <= covered["ece"] <= 198, covered
    assert 180 <= covered["accuracy"] <= 198, covered


def test_percentile_interval_is_numpy_quantile_of_the_resampled_values(case):
    logits, labels = case
    sample = top_label_sample(logits.softmax(1), labels)
    values, _ = resampled_statistics(sample, 50, seed=2, n_bins=10)
    intervals = bootstrap_top_label(sample, n_resamples=50, seed=2, level=0.9)
    for name in BOOTSTRAP_STATISTICS:
        expected = np.quantile(values[name].numpy(), [0.05, 0.95])
        assert intervals[name] == pytest.approx(tuple(expected), abs=1e-15)


def test_report_carries_intervals_and_band_and_round_trips(case):
    logits, labels = case
    report = evaluate(logits, labels, bootstrap=40, seed=5)
    assert report.intervals.n_resamples == 40 and report.intervals.seed == 5 and report.intervals.level == 0.95
    for name in BOOTSTRAP_STATISTICS:
        low, high = getattr(report.intervals, name)
        assert low <= high
    expected = bootstrap_top_label(top_label_sample(logits.softmax(1), labels), n_resamples=40, seed=5)
    assert report.intervals.ece == pytest.approx(list(expected["ece"]), abs=1e-12)
    smooth = report.smooth_reliability
    assert len(smooth.lower) == len(smooth.mesh) == len(smooth.upper) == 101
    assert all(lo <= hi for lo, hi in zip(smooth.lower, smooth.upper, strict=True))
    assert EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    assert evaluate(logits, labels, bootstrap=40, seed=5) == report  # seeded
    assert evaluate(logits, labels, bootstrap=40, seed=6).intervals != report.intervals


def test_old_reports_without_the_new_fields_still_load(case):
    data = evaluate(*case).to_dict()
    for key in ("smooth_ece", "smooth_ece_bandwidth", "debiased_ece", "ece_sweep", "ece_sweep_bins"):
        data.pop(key)
    data.pop("smooth_reliability")
    data.pop("intervals")
    old = EvaluationReport.from_dict(data)
    assert old.smooth_ece is None and old.intervals is None and old.smooth_reliability is None
    with pytest.raises(ValueError, match="EvaluationReport"):
        EvaluationReport.from_dict({**data, "unknown_metric": 1.0})
    with pytest.raises(ValueError, match="EvaluationReport"):
        EvaluationReport.from_dict({key: value for key, value in data.items() if key != "ece"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"bootstrap": -1}, "bootstrap"), ({"bootstrap": 10, "level": 1.0}, "level"), ({"seed": 1.5}, "seed")],
)
def test_bad_bootstrap_settings_are_refused(case, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(*case, **kwargs)


def test_bad_statistics_are_refused(case):
    sample = top_label_sample(case[0].softmax(1), case[1])
    with pytest.raises(ValueError, match="statistics"):
        bootstrap_top_label(sample, n_resamples=5, statistics=("mce",))
