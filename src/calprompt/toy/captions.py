"""Pretraining captions: attribute descriptions of a scene, sometimes naming its imaging style.

Captions name the colour and shape and some nuisances (size, texture, position, background, the second object).
The style is named with probability `p_mention` ("an inverted image of a red star."), otherwise a generic template
is used. "a photo of ..." is kept rare (`PHOTO_MENTION` of photo captions) so that the downstream template
"a photo of a {}." differs from what pretraining saw: the prompt gap that prompt tuning learns to close.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from calprompt._validation import check_choice, fail
from calprompt.toy.render import Scene
from calprompt.toy.styles import STYLES

PHOTO_MENTION = 0.12  # fraction of photo-style captions that say "a photo of ..."

TEXTURE_PHRASES: dict[str, str] = {
    "plain": "no pattern",
    "striped": "stripes",
    "dotted": "dots",
    "checkered": "a checkered pattern",
}

# Generic templates over a noun phrase; none of them says "a photo of". Slots: {np} the article + colour + shape
# phrase, {colour}, {shape}, {size}, {texture}, {texture_phrase}, {where}, {background}, {second}.
GENERIC_TEMPLATES: tuple[str, ...] = (
    "{np}.",
    "an image of {np}.",
    "a picture of {size_np}.",
    "{size_np} {where}.",
    "{texture_np}.",
    "{np} with {texture_phrase}.",
    "a {texture} {shape} in {colour}.",
    "there is {np} {where}.",
    "a {shape} that is {colour}.",
    "{size_np} on a {background} background.",
    "{colour} {shape}, {size}, {texture}.",
    "a {size} {texture} {colour} {shape} {where}.",
)
SECOND_TEMPLATES: tuple[str, ...] = (
    "{np} next to {second}.",
    "{np} and {second}.",
)

# Style-naming prefixes, applied to a noun phrase that may carry one nuisance.
STYLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of {np}.", "a photo of {size_np}."),
    "inverted": ("an inverted image of {np}.", "a negative of {np}.", "an inverted image of {texture_np}."),
    "sketch": ("a sketch of {np}.", "a sketch of {size_np}.", "an outline drawing of {np}."),
    "pixelated": ("a pixelated picture of {np}.", "a low resolution image of {np}.", "a pixelated {colour} {shape}."),
    "noisy": ("a noisy photo of {np}.", "a grainy image of {np}.", "a noisy image of {size_np}."),
}


def article(phrase: str) -> str:
    """`phrase` with the English indefinite article in front ("an orange star")."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def position_words(center: tuple[float, float]) -> str:
    """Where the object sits: 'on the left', 'at the top', ... or 'in the middle'."""
    x, y = center
    dx, dy = x - 0.5, y - 0.5
    if max(abs(dx), abs(dy)) < 0.12:
        return "in the middle"
    if abs(dx) >= abs(dy):
        return "on the left" if dx < 0 else "on the right"
    return "at the top" if dy < 0 else "at the bottom"


def caption_slots(scene: Scene) -> dict[str, str]:
    """The words a caption template can use for `scene`."""
    slots = {
        "colour": scene.colour,
        "shape": scene.shape,
        "size": scene.size,
        "texture": scene.texture,
        "texture_phrase": TEXTURE_PHRASES[scene.texture],
        "where": position_words(scene.main.center),
        "background": "dark" if scene.dark_background else "light",
        "np": article(f"{scene.colour} {scene.shape}"),
        "size_np": article(f"{scene.size} {scene.colour} {scene.shape}"),
        "texture_np": article(f"{scene.texture} {scene.colour} {scene.shape}"),
        "second": "",
    }
    if scene.second is not None and scene.second_colour is not None:
        slots["second"] = article(f"small {scene.second_colour} {scene.second.shape}")
    return slots


def mention_probability(p_mention: float | Mapping[str, float], style: str) -> float:
    """Probability that a caption of a `style` image names the style (photos: fixed `PHOTO_MENTION`)."""
    if style == "photo":
        return PHOTO_MENTION
    p = p_mention.get(style, 0.0) if isinstance(p_mention, Mapping) else p_mention
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        fail("p_mention", "a probability in [0, 1] (or a mapping style -> probability)", p_mention)
    return float(p)


def make_caption(rng: np.random.Generator, scene: Scene, p_mention: float | Mapping[str, float] = 0.5) -> str:
    """Draw one caption of `scene`; the style is named with probability `p_mention` (per style if a mapping)."""
    check_choice(scene.style, "scene.style", STYLES)
    slots = caption_slots(scene)
    mention = rng.random() < mention_probability(p_mention, scene.style)
    use_second = scene.second is not None and rng.random() < 0.4
    if mention:
        templates = STYLE_TEMPLATES[scene.style]
    elif use_second:
        templates = SECOND_TEMPLATES
    else:
        templates = GENERIC_TEMPLATES
    return templates[int(rng.integers(len(templates)))].format(**slots)
