"""Captions: what they name, how often they name the style, their length, and the usable token set."""

from __future__ import annotations

import re

import numpy as np
import pytest
from open_clip.tokenizer import SimpleTokenizer

from calprompt.toy.captions import PHOTO_MENTION, article, make_caption, position_words
from calprompt.toy.downstream import TOY_DATASET_SPECS
from calprompt.toy.render import sample_scene
from calprompt.toy.styles import STYLES
from calprompt.toy.vocab import PROMPT_TEMPLATES, toy_token_ids

# Phrases that name each style (written independently of the template table).
STYLE_WORDS = {
    "inverted": ("inverted", "negative"),
    "sketch": ("sketch", "drawing"),
    "pixelated": ("pixelated", "low resolution"),
    "noisy": ("noisy", "grainy"),
    "photo": ("photo",),
}
ALL_STYLE_WORDS = tuple(w for words in STYLE_WORDS.values() for w in words)


def captions(style: str, p_mention, n: int = 400, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [make_caption(rng, sample_scene(rng, style=style), p_mention) for _ in range(n)]


@pytest.mark.parametrize("style", [s for s in STYLES if s != "photo"])
def test_style_named_always_at_p1_and_never_at_p0(style):
    assert all(any(w in c for w in STYLE_WORDS[style]) for c in captions(style, 1.0))
    assert not any(any(w in c for w in ALL_STYLE_WORDS) for c in captions(style, 0.0))


def test_mention_probability_per_style_mapping():
    named = [any(w in c for w in STYLE_WORDS["inverted"]) for c in captions("inverted", {"inverted": 0.25}, n=2000)]
    assert np.mean(named) == pytest.approx(0.25, abs=0.03)
    assert not any(any(w in c for w in ALL_STYLE_WORDS) for c in captions("sketch", {"inverted": 1.0}))


def test_photo_of_is_rare_in_photo_captions():
    texts = captions("photo", 1.0, n=3000)  # p_mention does not apply to photos
    assert np.mean(["a photo of" in c for c in texts]) == pytest.approx(PHOTO_MENTION, abs=0.02)
    assert not any("a photo of" in c for s in STYLES if s != "photo" for c in captions(s, 0.5, n=300))


def test_caption_names_colour_and_shape_of_the_scene():
    rng = np.random.default_rng(1)
    for _ in range(500):
        scene = sample_scene(rng)
        caption = make_caption(rng, scene, 0.5)
        main_words = caption.split(" next to ")[0].split(" and a small ")[0]  # drop the second object's words
        assert re.search(rf"\b{scene.colour}\b", main_words) and re.search(rf"\b{scene.shape}\b", main_words)
        assert caption.endswith(".")


def test_article_and_position():
    assert article("orange star") == "an orange star" and article("red star") == "a red star"
    assert position_words((0.5, 0.52)) == "in the middle"
    assert position_words((0.2, 0.45)) == "on the left"
    assert position_words((0.55, 0.85)) == "at the bottom"


def test_sampled_captions_are_short_and_use_only_usable_tokens():
    tokenizer = SimpleTokenizer()
    usable = set(toy_token_ids())
    rng = np.random.default_rng(2)
    for style in STYLES:
        for p in (0.0, 0.5, 1.0):
            for _ in range(150):
                ids = tokenizer.encode(make_caption(rng, sample_scene(rng, style=style), p))
                assert len(ids) <= 24
                assert set(ids) <= usable


def test_usable_tokens_cover_class_prompts():
    tokenizer = SimpleTokenizer()
    usable = set(toy_token_ids())
    assert {0, 49406, 49407} <= usable
    for spec in TOY_DATASET_SPECS.values():
        for name in spec.classnames:
            for template in (spec.template, *PROMPT_TEMPLATES):
                assert set(tokenizer.encode(template.format(name))) <= usable
    assert set(tokenizer.encode("X X X X itap of a photo of a")) <= usable
    assert len(usable) < 200  # the point of storing only these rows


def test_bad_p_mention_is_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Expected `p_mention`"):
        make_caption(rng, sample_scene(rng, style="sketch"), 1.5)
