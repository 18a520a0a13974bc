"""Deterministic renderer of the toy world's 32x32 scenes: one coloured, textured shape among nuisances.

A `Scene` describes everything that is drawn, so rendering is a pure function of it: the same scene gives
byte-identical pixels every time (on one platform). `sample_scene` draws the nuisance factors from a
`numpy.random.Generator`, optionally with some factors fixed (the class of a downstream dataset).

Objects are drawn with hard masks at 2x resolution (64x64) and box-downsampled, which anti-aliases their edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from calprompt._validation import check_choice, fail
from calprompt.toy.styles import STYLES, apply_style

IMAGE_SIZE = 32
_SCALE = 2  # draw at 2x and downsample (`_downsample` sums 2x2 blocks)
_CANVAS = IMAGE_SIZE * _SCALE

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 40),
    "green": (40, 165, 55),
    "cyan": (40, 205, 225),
    "blue": (35, 65, 215),
    "purple": (135, 45, 195),
    "pink": (245, 125, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")
SIZES: dict[str, float] = {"small": 0.22, "medium": 0.27, "large": 0.32}  # object radius / image width
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
# Low-saturation backgrounds so that no background reads as one of the object colours.
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (30, 30, 35),
    (200, 200, 195),
    (120, 120, 120),
    (220, 205, 175),
    (55, 70, 90),
    (85, 75, 55),
)
_SHADE = 0.5  # brightness of the "off" part of a texture relative to the object colour (keeps the silhouette)
_SECOND_RADIUS = (0.11, 0.14)
# Every shape lies within this many radii of its centre in local units (the square's corners: 0.85 * sqrt(2)).
_EXTENT = 1.25
_SCENE_FACTORS = ("colour", "shape", "size", "texture", "style", "second_object")


@dataclass(frozen=True)
class SceneObject:
    """One shape: geometry in image-width units, rotation in degrees, colour as jittered RGB."""

    shape: str
    center: tuple[float, float]  # (x, y) in [0, 1], y pointing down
    radius: float
    rotation: float
    rgb: tuple[int, int, int]
    texture: str = "plain"


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one image; `colour`/`size` are the names the captions use."""

    colour: str
    shape: str
    size: str
    texture: str
    main: SceneObject
    background: tuple[int, int, int]
    gradient_angle: float  # degrees
    gradient_strength: float  # total brightness change across the image, in 0-255 units
    noise_std: float  # Gaussian pixel noise, 0-255 units
    brightness: float  # global multiplicative jitter
    noise_seed: int  # seeds the pixel noise and the "noisy" style
    style: str = "photo"
    second: SceneObject | None = None
    second_colour: str | None = None

    @property
    def dark_background(self) -> bool:
        return sum(self.background) / 3 < 110


def _grid() -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(_CANVAS, dtype=np.float32) + 0.5) / _CANVAS
    ys, xs = np.meshgrid(centres, centres, indexing="ij")  # (64, 64) each, image-width units
    return xs, ys


_XS, _YS = _grid()


def _star_inside(u: np.ndarray, v: np.ndarray, outer: float = 1.15, inner: float = 0.45) -> np.ndarray:
    """Inside test of a straight-edged five-pointed star by folding the angle into one half-spike."""
    sector = 2 * math.pi / 5
    angle = np.mod(np.arctan2(v, u) - math.pi / 2, sector)  # a spike points up (local +v)
    angle = np.minimum(angle, sector - angle)  # fold: 0 at a spike, pi/5 at a notch
    rho = np.hypot(u, v)
    px, py = rho * np.cos(angle), rho * np.sin(angle)
    ox, oy = outer, 0.0
    ix, iy = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    # The origin and an inside point lie on the same side of the edge outer-vertex -> notch.
    return (px - ox) * (iy - oy) - (py - oy) * (ix - ox) <= 0


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a unit-radius shape in local (rotated, radius-normalised) coordinates."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ring":
        rho2 = u * u + v * v
        return (rho2 <= 1.0) & (rho2 >= 0.58**2)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))
    if shape == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for degrees in (90.0, 210.0, 330.0):  # outward normals of the three edges; apex points down (-v)
            a = math.radians(degrees)
            inside &= u * math.cos(a) + v * math.sin(a) <= 0.55
        return inside
    if shape == "star":
        return _star_inside(u, v)
    fail("shape", f"one of {SHAPES}", shape)


def _texture_on(texture: str, u_px: np.ndarray, v_px: np.ndarray) -> np.ndarray:
    """True where the texture shows the object colour, False where it shows the darker shade (canvas pixels)."""
    if texture == "plain":
        return np.ones_like(u_px, dtype=bool)
    # Periods are in canvas pixels (half that at 32 px), coarse enough to tell apart after downsampling.
    if texture == "striped":
        return np.mod(u_px, 12.0) < 6.0
    if texture == "dotted":
        du, dv = np.mod(u_px, 10.0) - 5.0, np.mod(v_px, 10.0) - 5.0
        return du * du + dv * dv > 2.8**2
    if texture == "checkered":
        return (np.floor(u_px / 8.0) + np.floor(v_px / 8.0)) % 2 == 0
    fail("texture", f"one of {TEXTURES}", texture)


def _window(obj: SceneObject) -> tuple[slice, slice]:
    """Canvas rows and columns that can hold `obj`: every shape lies within `_EXTENT` radii of its centre."""
    reach = _EXTENT * obj.radius * _CANVAS + 1.0  # one pixel more than the bound, for the rounding of u and v
    x, y = obj.center[0] * _CANVAS, obj.center[1] * _CANVAS
    rows = slice(max(0, math.floor(y - reach)), min(_CANVAS, math.ceil(y + reach) + 1))
    columns = slice(max(0, math.floor(x - reach)), min(_CANVAS, math.ceil(x + reach) + 1))
    return rows, columns


def _draw(canvas: np.ndarray, obj: SceneObject) -> None:
    """Paint `obj` onto the (64, 64, 3) float canvas in place.

    Only the window around the object is computed (`_window`): the same arithmetic per pixel as on the whole
    canvas, so the same pixels, in a third to a half of the work.
    """
    rows, columns = _window(obj)
    a = math.radians(obj.rotation)
    dx, dy = _XS[rows, columns] - obj.center[0], _YS[rows, columns] - obj.center[1]
    # Local coordinates; v points up so that "up" in the shape definitions is up in the image.
    u = (dx * math.cos(a) - dy * math.sin(a)) / obj.radius
    v = -(dx * math.sin(a) + dy * math.cos(a)) / obj.radius
    mask = _shape_mask(obj.shape, u, v)
    px = obj.radius * _CANVAS  # texture period is fixed in pixels, not relative to the object size
    on = _texture_on(obj.texture, u * px, v * px)
    rgb = np.asarray(obj.rgb, dtype=np.float32)
    colour = np.where(on[..., None], rgb, rgb * _SHADE)  # (h, w, 3)
    np.copyto(canvas[rows, columns], colour, where=mask[..., None])


def _downsample(canvas: np.ndarray) -> np.ndarray:
    """The (32, 32, 3) mean of each 2x2 block of the canvas, summed in the order ``np.mean`` over the two block
    axes sums them (so the same float32 values), at a fifth of its cost."""
    blocks = canvas.reshape(IMAGE_SIZE, _SCALE, IMAGE_SIZE, _SCALE, 3)
    total = ((blocks[:, 0, :, 0] + blocks[:, 0, :, 1]) + blocks[:, 1, :, 0]) + blocks[:, 1, :, 1]
    return total / np.float32(_SCALE * _SCALE)


def _background(scene: Scene) -> np.ndarray:
    a = math.radians(scene.gradient_angle)
    ramp = (_XS - 0.5) * math.cos(a) + (_YS - 0.5) * math.sin(a)  # in [-0.71, 0.71]
    base = np.asarray(scene.background, dtype=np.float32)
    return base + (scene.gradient_strength * ramp)[..., None]  # (64, 64, 3)


def render_photo(scene: Scene) -> np.ndarray:
    """Render the scene without its style: uint8 array (32, 32, 3)."""
    canvas = _background(scene)
    if scene.second is not None:
        _draw(canvas, scene.second)
    _draw(canvas, scene.main)
    image = _downsample(canvas)  # box-downsample to 32
    image *= scene.brightness
    if scene.noise_std > 0:
        noise = np.random.default_rng([scene.noise_seed, 0]).standard_normal(image.shape, dtype=np.float32)
        image += scene.noise_std * noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_scene(scene: Scene) -> np.ndarray:
    """Render the scene and apply its style: uint8 array (32, 32, 3), a pure function of `scene`."""
    return apply_style(render_photo(scene), scene.style, seed=scene.noise_seed)


def _jitter_rgb(rng: np.random.Generator, rgb: tuple[int, int, int], spread: int) -> tuple[int, int, int]:
    offsets = rng.integers(-spread, spread + 1, size=3).tolist()
    return tuple(min(255, max(0, c + o)) for c, o in zip(rgb, offsets, strict=True))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_scene(rng: np.random.Generator, **constraints: Any) -> Scene:
    """Draw a scene, fixing any of `colour`, `shape`, `size`, `texture`, `style`, `second_object` (bool).

    The number of draws from `rng` does not depend on the constraints, so fixing the class of an item does not
    shift the nuisances of the items drawn after it.
    """
    for key in constraints:
        check_choice(key, "constraint name", _SCENE_FACTORS)
    colour = _pick(rng, list(COLOURS))
    shape = _pick(rng, SHAPES)
    size = _pick(rng, list(SIZES))
    texture = _pick(rng, TEXTURES)
    style = _pick(rng, STYLES)
    has_second = bool(rng.random() < 0.35)
    colour = check_choice(constraints.get("colour", colour), "colour", COLOURS)
    shape = check_choice(constraints.get("shape", shape), "shape", SHAPES)
    size = check_choice(constraints.get("size", size), "size", SIZES)
    texture = check_choice(constraints.get("texture", texture), "texture", TEXTURES)
    style = check_choice(constraints.get("style", style), "style", STYLES)
    has_second = bool(constraints.get("second_object", has_second))

    radius = SIZES[size] * float(rng.uniform(0.93, 1.07))
    margin = radius  # keep the object inside the frame (star and triangle tips may touch the border)
    center = (float(rng.uniform(margin, 1 - margin)), float(rng.uniform(margin, 1 - margin)))
    main = SceneObject(
        shape=shape,
        center=center,
        radius=radius,
        rotation=float(rng.uniform(0, 360)),
        rgb=_jitter_rgb(rng, COLOURS[colour], 18),
        texture=texture,
    )

    # Second object: always drawn from rng (fixed number of draws), used only if present.
    second_colour = _pick(rng, list(COLOURS))
    second_shape = _pick(rng, SHAPES)
    r2 = float(rng.uniform(*_SECOND_RADIUS))
    candidates = rng.uniform(r2, 1 - r2, size=(8, 2))
    far = int(np.argmax(np.hypot(candidates[:, 0] - center[0], candidates[:, 1] - center[1])))
    second = SceneObject(
        shape=second_shape,
        center=(float(candidates[far, 0]), float(candidates[far, 1])),
        radius=r2,
        rotation=float(rng.uniform(0, 360)),
        rgb=_jitter_rgb(rng, COLOURS[second_colour], 18),
        texture=_pick(rng, TEXTURES),
    )

    background = _jitter_rgb(rng, BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], 12)
    return Scene(
        colour=colour,
        shape=shape,
        size=size,
        texture=texture,
        main=main,
        background=background,
        gradient_angle=float(rng.uniform(0, 360)),
        gradient_strength=float(rng.uniform(-40, 40)),
        noise_std=float(rng.uniform(0, 10)),
        brightness=float(rng.uniform(0.85, 1.15)),
        noise_seed=int(rng.integers(2**31)),
        style=style,
        second=second if has_second else None,
        second_colour=second_colour if has_second else None,
    )
