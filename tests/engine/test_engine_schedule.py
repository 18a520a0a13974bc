"""The learning-rate schedule against the published sequences."""

from __future__ import annotations

import math

import pytest

from calprompt.engine.schedule import epoch_learning_rate


def test_maple_sequence():
    expected = [1e-5, 0.0035, 0.003166, 0.002291, 0.001209]
    got = [epoch_learning_rate(e, lr=0.0035, epochs=5) for e in range(5)]
    assert got == pytest.approx(expected, abs=5e-7)


def test_cosine_formula_and_no_warmup():
    for e in range(1, 200):
        assert epoch_learning_rate(e, lr=0.002, epochs=200) == pytest.approx(
            0.002 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 200))
        )
    assert epoch_learning_rate(0, lr=0.1, epochs=3, warmup_epochs=0) == pytest.approx(0.1)


def test_bad_epoch():
    with pytest.raises(ValueError, match="epoch"):
        epoch_learning_rate(5, lr=0.1, epochs=5)
