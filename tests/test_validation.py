"""The shared argument checks, and the exact errors of the places that use them (each message predates the helper)."""

from __future__ import annotations

import re

import pytest

from calprompt._validation import check_int, check_non_negative_int
from calprompt.calibration.conformal import SplitConformal
from calprompt.calibration.outliers import OutlierSampler
from calprompt.engine.schedule import epoch_learning_rate
from calprompt.engine.train import TrainConfig
from calprompt.methods.ivlp import IVLPConfig
from calprompt.metrics.report import BootstrapSettings
from calprompt.toy.downstream import TOY_DATASETS, build_toy_dataset
from calprompt.toy.pretrain import pretrain


@pytest.mark.parametrize("value", [0, 3, 10**20])
def test_non_negative_int_accepts_and_returns(value):
    assert check_non_negative_int(value, "n") == value


@pytest.mark.parametrize("value", [-1, True, False, 1.0, "1", None])
def test_non_negative_int_refuses_negatives_bools_and_non_ints(value):
    with pytest.raises(ValueError, match=re.escape(f"Expected `n` to be an integer >= 0, got {value!r}.")):
        check_non_negative_int(value, "n")
    with pytest.raises(ValueError, match=re.escape(f"Expected `n` to be a count (0: none), got {value!r}.")):
        check_non_negative_int(value, "n", expected="a count (0: none)")


@pytest.mark.parametrize("value", [-5, 0, 7])
def test_int_accepts_any_sign(value):
    assert check_int(value, "seed") == value


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_int_refuses_bools_and_non_ints(value):
    with pytest.raises(ValueError, match=re.escape(f"Expected `seed` to be an integer, got {value!r}.")):
        check_int(value, "seed")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda _: TrainConfig(epochs=1, batch_size=2, lr=0.1, seed=-1), "`seed` to be an integer >= 0, got -1."),
        (lambda _: TrainConfig(epochs=1, batch_size=2, lr=0.1, seed=True), "`seed` to be an integer >= 0, got True."),
        (
            lambda _: epoch_learning_rate(0, lr=0.1, epochs=2, warmup_epochs=-1),
            "`warmup_epochs` to be an integer >= 0, got -1.",
        ),
        (lambda _: IVLPConfig(n_ctx_vision=-1), "`n_ctx_vision` to be an integer >= 0 (0: no visual prompts), got -1."),
        (lambda _: build_toy_dataset(TOY_DATASETS[0], seed=-1), "`seed` to be an integer >= 0, got -1."),
        (lambda folder: pretrain(folder, num_workers=True), "`num_workers` to be an integer >= 0, got True."),
        (
            lambda _: BootstrapSettings(n_resamples=-1),
            "`bootstrap` to be a number of resamples >= 0 (0: no intervals), got -1.",
        ),
        (lambda _: BootstrapSettings(seed=1.0), "`seed` to be an integer, got 1.0."),
        (lambda _: OutlierSampler(10, 2, seed=True), "`seed` to be an integer, got True."),
        (lambda _: SplitConformal(seed="1"), "`seed` to be an integer, got '1'."),
    ],
)
def test_each_caller_keeps_its_message(tmp_path, build, message):
    with pytest.raises(ValueError, match=re.escape(f"Expected {message}")):
        build(tmp_path)
    assert not any(tmp_path.iterdir())  # refused before touching the disk


def test_seeds_of_any_sign_stay_accepted_where_they_were():
    assert BootstrapSettings(seed=-3).seed == -3
    assert OutlierSampler(10, 2, seed=-1).seed == -1
    assert SplitConformal(seed=-2).seed == -2
