"""The token ids the toy world can produce, computed by tokenizing an exhaustive text list.

The shipped checkpoint keeps only these rows of the 49408 x 64 token embedding (92 % of the model's parameters):
every caption template with every slot value, every toy class name in every prompt template in use, and the words
prompt-tuning methods initialise their context from. CLIP's byte-pair encoder works word by word, so filling one
slot at a time covers every combination.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from open_clip.tokenizer import SimpleTokenizer

from calprompt.data.templates import ENSEMBLE_TEMPLATES
from calprompt.toy.captions import GENERIC_TEMPLATES, SECOND_TEMPLATES, STYLE_TEMPLATES, TEXTURE_PHRASES, article
from calprompt.toy.downstream import TOY_DATASET_SPECS
from calprompt.toy.render import COLOURS, SHAPES, SIZES, TEXTURES

CONTEXT_LENGTH = 32
SOT_ID, EOT_ID, PAD_ID = 49406, 49407, 0

# Prompts used around class names by zero-shot evaluation and prompt-tuning methods (CoOp's ensemble included).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "{}.",
    "X X X X {}.",
    "X X X X X X X X X X X X X X X X {}.",
    *ENSEMBLE_TEMPLATES,
    "an inverted image of a {}.",
    "a sketch of a {}.",
    "a photo of a {}, a type of shape.",
)


def _slot_values() -> dict[str, tuple[str, ...]]:
    nps = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    return {
        "colour": tuple(COLOURS),
        "shape": SHAPES,
        "size": tuple(SIZES),
        "texture": TEXTURES,
        "texture_phrase": tuple(TEXTURE_PHRASES.values()),
        "where": ("in the middle", "on the left", "on the right", "at the top", "at the bottom"),
        "background": ("dark", "light"),
        "np": tuple(article(p) for p in nps),
        "size_np": tuple(article(f"{z} {p}") for z in SIZES for p in nps),
        "texture_np": tuple(article(f"{t} {p}") for t in TEXTURES for p in nps),
        "second": tuple(article(f"small {p}") for p in nps),
    }


def toy_text_corpus() -> Iterator[str]:
    """Every caption template with each slot value in turn, and every class name in every prompt template."""
    values = _slot_values()
    first = {slot: options[0] for slot, options in values.items()}
    templates = (*GENERIC_TEMPLATES, *SECOND_TEMPLATES, *(t for ts in STYLE_TEMPLATES.values() for t in ts))
    for template in templates:
        for slot, options in values.items():
            for value in options:
                yield template.format(**{**first, slot: value})
    for spec in TOY_DATASET_SPECS.values():
        for classname in spec.classnames:
            for template in (spec.template, *PROMPT_TEMPLATES):
                yield template.format(classname)


@functools.cache
def tokenizer() -> SimpleTokenizer:
    """The real CLIP tokenizer with the toy model's context length (32)."""
    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


@functools.cache
def toy_token_ids() -> tuple[int, ...]:
    """Sorted token ids the toy world uses, including start/end-of-text and padding."""
    # One call on the joined corpus: every text ends in a letter or "." and the next starts with a letter after a
    # space, so the word splits (and hence the ids) equal those of the texts encoded one by one, ~50x faster.
    ids = {SOT_ID, EOT_ID, PAD_ID, *tokenizer().encode(" ".join(sorted(set(toy_text_corpus()))))}
    return tuple(sorted(ids))
