"""Imaging styles applied after rendering: the toy world's "domains".

A style changes how a scene looks without changing what it shows. Downstream datasets are rendered in styles that
their zero-shot template does not name, which gives prompt tuning a real gap to close (see `calprompt.toy.world`).
"""

from __future__ import annotations

import numpy as np

from calprompt._validation import check_choice

STYLES: tuple[str, ...] = ("photo", "sketch", "pixelated", "inverted", "noisy")

PIXEL_GRID = 8  # "pixelated": the image is averaged into an 8x8 grid of blocks (4x4 pixels each at 32 px)
NOISE_STD = 0.22  # "noisy": Gaussian noise std in [0, 1] image units
_SOBEL_FULL_SCALE = 250.0  # Sobel magnitude (0-255 grey units) drawn as a full-strength line


def _sobel_magnitude(grey: np.ndarray) -> np.ndarray:
    """Gradient magnitude of a (H, W) float image with 3x3 Sobel kernels and edge padding."""
    p = np.pad(grey, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy)


def sketch(image: np.ndarray) -> np.ndarray:
    """Outline drawing: white paper, edges (Sobel on grey) drawn in the colour underneath, so colour survives."""
    x = image.astype(np.float32)
    strength = np.clip(_sobel_magnitude(x.mean(axis=-1)) / _SOBEL_FULL_SCALE, 0.0, 1.0)[..., None]
    out = 255.0 - (255.0 - x) * strength
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pixelate(image: np.ndarray, grid: int = PIXEL_GRID) -> np.ndarray:
    """Average into a `grid` x `grid` mosaic and blow back up (nearest), like a low-resolution screen."""
    h, w, c = image.shape
    blocks = image.astype(np.float32).reshape(grid, h // grid, grid, w // grid, c).mean(axis=(1, 3))
    small = np.clip(np.rint(blocks), 0, 255).astype(np.uint8)  # (grid, grid, 3)
    return np.repeat(np.repeat(small, h // grid, axis=0), w // grid, axis=1)


def invert(image: np.ndarray) -> np.ndarray:
    """Photographic negative: 255 - x."""
    return 255 - image


def add_noise(image: np.ndarray, seed: int, std: float = NOISE_STD) -> np.ndarray:
    """Add seeded Gaussian noise of `std` (in [0, 1] units) and clip."""
    noise = np.random.default_rng([seed, 1]).standard_normal(image.shape, dtype=np.float32)
    out = image.astype(np.float32) + (255.0 * std) * noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def apply_style(image: np.ndarray, style: str, seed: int = 0) -> np.ndarray:
    """Apply `style` to a uint8 (H, W, 3) image; `seed` drives the only random style ("noisy")."""
    check_choice(style, "style", STYLES)
    if style == "photo":
        return image
    if style == "sketch":
        return sketch(image)
    if style == "pixelated":
        return pixelate(image)
    if style == "inverted":
        return invert(image)
    return add_noise(image, seed)
