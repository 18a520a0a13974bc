"""Pretraining batches: determinism, format and the style mix."""

from __future__ import annotations

import numpy as np
import pytest

from calprompt.toy.world import pretraining_batch, style_probabilities


def test_same_seed_gives_identical_bytes_and_captions():
    a = pretraining_batch(np.random.default_rng(5), 16, p_mention=0.5)
    b = pretraining_batch(np.random.default_rng(5), 16, p_mention=0.5)
    c = pretraining_batch(np.random.default_rng(6), 16, p_mention=0.5)
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1]
    assert a[0].tobytes() != c[0].tobytes() and a[1] != c[1]


def test_batch_format():
    images, captions = pretraining_batch(np.random.default_rng(0), 7)
    assert images.shape == (7, 32, 32, 3) and images.dtype == np.uint8
    assert len(captions) == 7 and all(isinstance(c, str) and c for c in captions)


def test_style_weights_select_the_style():
    _, captions = pretraining_batch(np.random.default_rng(0), 64, {"inverted": 1.0}, p_mention=1.0)
    assert all("inverted" in c or "negative" in c for c in captions)
    _, captions = pretraining_batch(np.random.default_rng(0), 64, {"sketch": 2.0, "photo": 0.0}, p_mention=1.0)
    assert all("sketch" in c or "drawing" in c for c in captions)


def test_style_probabilities_normalise_in_styles_order():
    assert np.allclose(style_probabilities({"photo": 2, "noisy": 2}), [0.5, 0, 0, 0, 0.5])


@pytest.mark.parametrize("weights", [{"oil": 1.0}, {"photo": -1.0}, {"photo": 0.0}])
def test_bad_style_weights_are_named(weights):
    with pytest.raises(ValueError, match="Expected `style_weights"):
        pretraining_batch(np.random.default_rng(0), 4, weights)
