"""Image styles against naive reimplementations and exact expectations."""

from __future__ import annotations

import numpy as np
import pytest

from calprompt.toy.render import render_photo, render_scene, sample_scene
from calprompt.toy.styles import STYLES, apply_style


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def test_photo_is_identity(image):
    assert np.array_equal(apply_style(image, "photo"), image)


def test_inverted_is_exactly_255_minus_x(image):
    assert np.array_equal(apply_style(image, "inverted").astype(int), 255 - image.astype(int))


def test_pixelated_is_the_mean_of_each_4x4_block(image):
    out = apply_style(image, "pixelated")
    for by in range(8):
        for bx in range(8):
            block = image[4 * by : 4 * by + 4, 4 * bx : 4 * bx + 4].reshape(-1, 3).astype(float)
            expected = np.floor(block.mean(axis=0) + 0.5)  # no exact .5 ties: a sum of 16 ints / 16 rarely is one
            got = out[4 * by : 4 * by + 4, 4 * bx : 4 * bx + 4].reshape(-1, 3)
            assert np.all(got == got[0])
            assert np.abs(got[0] - expected).max() <= 1  # round-half-even vs half-up may differ by one at ties


def test_sketch_is_white_on_flat_regions_and_keeps_the_colour_on_strong_edges():
    flat = np.full((32, 32, 3), (90, 160, 30), dtype=np.uint8)
    assert np.all(apply_style(flat, "sketch") == 255)
    step = flat.copy()
    step[:, 16:] = (250, 250, 250)  # a strong vertical edge (grey step of ~170, Sobel magnitude ~680 > full scale)
    out = apply_style(step, "sketch")
    assert np.all(out[:, 15] == (90, 160, 30))  # the dark side of the edge drawn in its own colour
    assert np.all(out[:, :14] == 255) and np.all(out[:, 18:] == 255)


def test_noisy_is_seeded_and_has_the_documented_std():
    grey = np.full((32, 32, 3), 128, dtype=np.uint8)
    a, b, c = apply_style(grey, "noisy", seed=1), apply_style(grey, "noisy", seed=1), apply_style(grey, "noisy", seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    noise = np.stack([apply_style(grey, "noisy", seed=s) for s in range(20)]).astype(float) - 128
    # Clipping at 0/255 (2.3 std away) hardly changes the std.
    assert noise.mean() == pytest.approx(0, abs=0.5)
    assert noise.std() == pytest.approx(0.22 * 255, rel=0.03)


def test_scene_style_is_applied_after_rendering():
    scene = sample_scene(np.random.default_rng(4), style="inverted")
    assert np.array_equal(render_scene(scene).astype(int), 255 - render_photo(scene).astype(int))


@pytest.mark.parametrize("style", STYLES)
def test_every_style_keeps_shape_and_dtype(style, image):
    out = apply_style(image, style, seed=3)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_unknown_style_is_named(image):
    with pytest.raises(ValueError, match=r"Expected `style`.*'watercolour'"):
        apply_style(image, "watercolour")
