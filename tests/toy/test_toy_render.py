"""Renderer: determinism, and geometry/colour/texture checked against analytic values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from calprompt.toy.render import (
    COLOURS,
    SHAPES,
    SIZES,
    TEXTURES,
    Scene,
    SceneObject,
    render_photo,
    render_scene,
    sample_scene,
)

BG = 40
RGB = (200, 120, 60)


def plain_scene(shape="circle", center=(0.5, 0.5), radius=0.3, rotation=0.0, rgb=RGB, texture="plain") -> Scene:
    """A scene without nuisances: flat background, no gradient, noise, jitter or second object."""
    obj = SceneObject(shape, center, radius, rotation, rgb, texture)
    return Scene(
        colour="red",
        shape=shape,
        size="large",
        texture=texture,
        main=obj,
        background=(BG, BG, BG),
        gradient_angle=0.0,
        gradient_strength=0.0,
        noise_std=0.0,
        brightness=1.0,
        noise_seed=0,
    )


def coverage(image: np.ndarray) -> np.ndarray:
    """Fraction of each pixel covered by the object, from the red channel of a flat-background render."""
    return (image[..., 0].astype(float) - BG) / (RGB[0] - BG)


# Unit-radius areas of the shapes as defined in render.py, computed by hand.
UNIT_AREAS = {
    "circle": math.pi,
    "ring": math.pi * (1 - 0.58**2),
    "square": 1.7**2,
    "cross": 2 * (0.66 * 2.0) - 0.66**2,
    "triangle": 3 * math.sqrt(3) * 0.55**2,  # equilateral triangle with inradius 0.55
    "star": 10 * 0.5 * 1.15 * 0.45 * math.sin(math.pi / 5),  # ten triangles (outer 1.15, inner 0.45, angle pi/5)
}


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_area_matches_geometry(shape):
    radius = 0.3
    image = render_scene(plain_scene(shape, radius=radius, rotation=17.0))
    expected = UNIT_AREAS[shape] * (radius * 32) ** 2
    assert coverage(image).sum() == pytest.approx(expected, rel=0.03)


def test_object_centroid_follows_position():
    image = render_scene(plain_scene("circle", center=(0.3, 0.65), radius=0.2))
    cov = coverage(image)
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    assert (cov * xs).sum() / cov.sum() == pytest.approx(0.3 * 32, abs=0.1)
    assert (cov * ys).sum() / cov.sum() == pytest.approx(0.65 * 32, abs=0.1)


@pytest.mark.parametrize("colour", list(COLOURS))
def test_interior_pixel_has_the_object_colour(colour):
    image = render_scene(plain_scene("square", rgb=COLOURS[colour]))
    assert tuple(image[16, 16]) == COLOURS[colour]
    assert tuple(image[1, 1]) == (BG, BG, BG)


# Windows span whole texture periods around the object centre (stripes: 6 px, dots: 5 px at 32 px).
@pytest.mark.parametrize(
    ("texture", "shade_fraction", "window"),
    [("plain", 0.0, slice(6, 26)), ("striped", 0.5, slice(10, 22)), ("dotted", math.pi * 2.8**2 / 100, slice(6, 26))],
)
def test_texture_darkens_the_expected_fraction(texture, shade_fraction, window):
    image = render_scene(plain_scene("square", radius=0.4, texture=texture))  # square half-side 10.9 px
    interior = image[window, window, 0].astype(float)
    # Each pixel is colour * (1 - (1 - 0.5) * shaded part); average brightness relative to the colour:
    assert interior.mean() / RGB[0] == pytest.approx(1 - 0.5 * shade_fraction, abs=0.015)


def test_checkered_has_both_levels_in_both_directions():
    image = render_scene(plain_scene("square", radius=0.35, texture="checkered")).astype(int)
    row, col = image[16, 10:22, 0], image[10:22, 16, 0]
    for line in (row, col):
        assert line.max() >= RGB[0] - 2 and line.min() <= round(RGB[0] * 0.5) + 2


def test_same_seed_same_scene_and_bytes_different_seed_differs():
    a = sample_scene(np.random.default_rng(7))
    b = sample_scene(np.random.default_rng(7))
    c = sample_scene(np.random.default_rng(8))
    assert a == b
    assert render_scene(a).tobytes() == render_scene(b).tobytes() == render_scene(a).tobytes()
    assert render_scene(a).tobytes() != render_scene(c).tobytes()


def test_noise_is_seeded_by_the_scene():
    scene = sample_scene(np.random.default_rng(3), style="photo")
    assert scene.noise_std > 0
    assert render_photo(scene).tobytes() == render_photo(scene).tobytes()
    reseeded = Scene(**{**scene.__dict__, "noise_seed": scene.noise_seed + 1})
    assert render_photo(reseeded).tobytes() != render_photo(scene).tobytes()


def test_constraints_fix_factors_without_shifting_the_stream():
    free, fixed = np.random.default_rng(11), np.random.default_rng(11)
    sample_scene(free)
    scene = sample_scene(fixed, colour="pink", shape="ring", size="small", texture="dotted", style="sketch")
    assert (scene.colour, scene.shape, scene.size, scene.texture, scene.style) == (
        "pink",
        "ring",
        "small",
        "dotted",
        "sketch",
    )
    assert np.all(np.abs(np.subtract(scene.main.rgb, COLOURS["pink"])) <= 18)
    assert scene.main.radius == pytest.approx(SIZES["small"], rel=0.08)
    assert free.random() == fixed.random()  # the same number of draws either way


def test_nuisance_factors_vary():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(1000)]
    assert abs(np.mean([s.second is not None for s in scenes]) - 0.35) < 0.05
    assert {s.texture for s in scenes} == set(TEXTURES)
    assert {s.size for s in scenes} == set(SIZES)
    assert len({s.background for s in scenes}) > 100
    assert all(0 < s.main.center[0] < 1 and 0 < s.main.center[1] < 1 for s in scenes)


def test_rendered_image_format():
    image = render_scene(sample_scene(np.random.default_rng(0)))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8


@pytest.mark.parametrize(
    ("constraints", "name"), [({"colour": "mauve"}, "colour"), ({"hue": "red"}, "constraint name")]
)
def test_bad_constraints_name_the_setting(constraints, name):
    with pytest.raises(ValueError, match=f"Expected `{name}`"):
        sample_scene(np.random.default_rng(0), **constraints)


def _reference_photo(scene: Scene) -> np.ndarray:
    """render_photo as first written: every object computed on the whole 64x64 canvas, np.mean to downsample."""
    from calprompt.toy import render

    def draw(canvas: np.ndarray, obj: SceneObject) -> None:
        a = math.radians(obj.rotation)
        dx, dy = render._XS - obj.center[0], render._YS - obj.center[1]
        u = (dx * math.cos(a) - dy * math.sin(a)) / obj.radius
        v = -(dx * math.sin(a) + dy * math.cos(a)) / obj.radius
        px = obj.radius * 64
        on = render._texture_on(obj.texture, u * px, v * px)
        rgb = np.asarray(obj.rgb, dtype=np.float32)
        np.copyto(canvas, np.where(on[..., None], rgb, rgb * 0.5), where=render._shape_mask(obj.shape, u, v)[..., None])

    canvas = render._background(scene)
    for obj in (scene.second, scene.main):
        if obj is not None:
            draw(canvas, obj)
    image = canvas.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)) * scene.brightness
    if scene.noise_std > 0:
        image += scene.noise_std * np.random.default_rng([scene.noise_seed, 0]).standard_normal((32, 32, 3), np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def test_windowed_drawing_gives_the_whole_canvas_pixels():
    """Objects are computed in a window around them and downsampled by explicit sums: the same bytes as the
    whole-canvas arithmetic with np.mean, for sampled scenes and for every shape at the largest radius, any
    rotation, touching each border."""
    rng = np.random.default_rng(7)
    scenes = [sample_scene(rng) for _ in range(600)]
    for shape in SHAPES:
        for center in ((0.3, 0.3), (0.7, 0.72), (0.34, 0.66)):
            for rotation in (0.0, 45.0, 137.0):
                scene = plain_scene(shape, center, 0.34, rotation, texture="checkered")
                scenes.append(dataclasses.replace(scene, brightness=1.1, noise_std=3.0, noise_seed=5))
    mismatched = [
        i for i, scene in enumerate(scenes) if not np.array_equal(render_photo(scene), _reference_photo(scene))
    ]
    assert mismatched == []
