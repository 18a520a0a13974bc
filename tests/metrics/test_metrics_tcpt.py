"""PIECE, the sample-weighted MCE and macro-F1 against the seed paper's evaluator (TCPT's replacement
``evaluator.py``, the same formulas as the DAC repository's ``tools/metrics.py``), re-typed as oracles with the
packages it uses (pandas, scikit-learn), on random inputs, to 1e-9 in float64."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score
from sklearn.preprocessing import KBinsDiscretizer

from calprompt.metrics import (
    evaluate,
    evaluate_probs,
    macro_f1,
    proximity_informed_calibration_error,
    sample_weighted_maximum_calibration_error,
)


def oracle_mce(conf, pred, gt, conf_bin_num=10):
    df = pd.DataFrame({"true": gt, "pred": pred, "conf": conf})
    df["correct"] = (df.pred == df.true).astype(int)
    bin_bounds = np.linspace(0, 1, conf_bin_num + 1)[1:-1]
    df["conf_bin"] = df["conf"].apply(lambda x: np.digitize(x, bin_bounds))
    group_acc = df.groupby("conf_bin")["correct"].mean()
    group_conf = df.groupby("conf_bin")["conf"].mean()
    counts = df.groupby("conf_bin")["conf"].count()
    return (abs(group_acc - group_conf) * (counts / len(df))).max()


def oracle_piece(conf, knndist, pred, gt, dist_bin_num=10, conf_bin_num=10):
    df = pd.DataFrame({"true": gt, "pred": pred, "conf": conf, "knndist": knndist})
    df["correct"] = (df.pred == df.true).astype(int)
    # quantile_method="linear": np.percentile's interpolation, the default of the scikit-learn the code was written for
    discretizer = KBinsDiscretizer(n_bins=dist_bin_num, encode="ordinal", strategy="quantile", quantile_method="linear")
    df["knn_bin"] = discretizer.fit_transform(df[["knndist"]]).astype(int)
    bin_bounds = np.linspace(0, 1, conf_bin_num + 1)[1:-1]
    df["conf_bin"] = df["conf"].apply(lambda x: np.digitize(x, bin_bounds))
    grp_acc = df.groupby(["knn_bin", "conf_bin"])["correct"].mean()
    grp_conf = df.groupby(["knn_bin", "conf_bin"])["conf"].mean()
    counts = df.groupby(["knn_bin", "conf_bin"])["conf"].count()
    return (abs(grp_acc - grp_conf) * (counts / len(df))).sum()


def _sample(seed, n, n_classes):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, n_classes)) * rng.uniform(0.5, 4)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(n_classes, p=p) for p in probs])
    distance = rng.gamma(2.0, 0.3, size=n)  # a mean kNN distance per image
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, 11)
    assert not np.isin(conf, edges).any()  # the (lo, hi] and [lo, hi) conventions agree off the edges
    return logits, probs, labels, np.exp(-distance), conf, pred


@pytest.mark.parametrize(("seed", "n", "n_classes"), [(0, 500, 5), (1, 1000, 20), (2, 257, 3), (3, 101, 10)])
def test_piece_and_sample_weighted_mce_equal_the_tcpt_evaluator(seed, n, n_classes):
    logits, probs, labels, near, conf, pred = _sample(seed, n, n_classes)
    assert float(proximity_informed_calibration_error(probs, labels, near)) == pytest.approx(
        oracle_piece(conf, near, pred, labels), abs=1e-9
    )
    assert float(sample_weighted_maximum_calibration_error(probs, labels)) == pytest.approx(
        oracle_mce(conf, pred, labels), abs=1e-9
    )
    report = evaluate(torch.from_numpy(logits), torch.from_numpy(labels), proximity=torch.from_numpy(near))
    assert report.piece == pytest.approx(oracle_piece(conf, near, pred, labels), abs=1e-9)
    assert report.sample_weighted_mce == pytest.approx(oracle_mce(conf, pred, labels), abs=1e-9)
    assert evaluate_probs(probs, labels).piece is None


@pytest.mark.parametrize(("seed", "n", "n_classes"), [(0, 300, 7), (1, 40, 12)])
def test_macro_f1_equals_scikit_learn_over_the_labels_present(seed, n, n_classes):
    logits, probs, labels, _, _, pred = _sample(seed, n, n_classes)
    labels[labels == 0] = 1  # class 0 absent from the labels but (likely) predicted: left out of the average
    expected = f1_score(labels, pred, average="macro", labels=np.unique(labels))
    assert float(macro_f1(probs, labels)) == pytest.approx(expected, abs=1e-12)
    assert evaluate(logits, labels).macro_f1 == pytest.approx(expected, abs=1e-12)


def test_piece_refuses_a_proximity_of_the_wrong_length():
    _, probs, labels, near, _, _ = _sample(0, 50, 4)
    with pytest.raises(ValueError, match="`proximity`"):
        proximity_informed_calibration_error(probs, labels, near[:10])
