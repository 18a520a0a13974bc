"""Pretraining data of the toy world: batches of rendered scenes with their captions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from calprompt._validation import check_non_negative, check_positive_int, fail
from calprompt.toy.captions import make_caption
from calprompt.toy.render import IMAGE_SIZE, render_scene, sample_scene
from calprompt.toy.styles import STYLES

# The prototype's style mix: photos 40 %, every other style 15 %.
DEFAULT_STYLE_WEIGHTS: dict[str, float] = {
    "photo": 0.40,
    "sketch": 0.15,
    "pixelated": 0.15,
    "inverted": 0.15,
    "noisy": 0.15,
}


def style_probabilities(style_weights: Mapping[str, float]) -> np.ndarray:
    """Normalised probabilities over `STYLES` (in that order) from non-negative weights."""
    for style, weight in style_weights.items():
        if style not in STYLES:
            fail("style_weights", f"a mapping with keys from {STYLES}", dict(style_weights))
        check_non_negative(weight, f"style_weights[{style!r}]")
    weights = np.array([float(style_weights.get(s, 0.0)) for s in STYLES])
    if weights.sum() <= 0:
        fail("style_weights", "weights with a positive sum", dict(style_weights))
    return weights / weights.sum()


def pretraining_batch(
    rng: np.random.Generator,
    batch_size: int,
    style_weights: Mapping[str, float] | None = None,
    p_mention: float | Mapping[str, float] = 0.5,
) -> tuple[np.ndarray, list[str]]:
    """Draw `batch_size` scenes with styles from `style_weights`; return uint8 images (B, 32, 32, 3) and captions."""
    check_positive_int(batch_size, "batch_size")
    probabilities = style_probabilities(DEFAULT_STYLE_WEIGHTS if style_weights is None else style_weights)
    styles = rng.choice(len(STYLES), size=batch_size, p=probabilities)
    images = np.empty((batch_size, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    captions = []
    for i, style_index in enumerate(styles):
        scene = sample_scene(rng, style=STYLES[int(style_index)])
        images[i] = render_scene(scene)
        captions.append(make_caption(rng, scene, p_mention))
    return images, captions
