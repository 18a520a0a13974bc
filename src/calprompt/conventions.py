"""Conventions every layer shares: CLIP's image normalisation and how class names fill prompts.

They live here, below ``clip/``, ``data/`` and ``methods/``, so that none of those packages imports another for them.
"""

from __future__ import annotations

# CLIP's per-channel image mean and standard deviation (RGB, on [0, 1] pixel values).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Activations (MB) a gradient pass of the text encoder may keep before its prompts are encoded in chunks that are
# recomputed during backward (`calprompt.clip.backbone`; the run setting ``text_memory_mb``).
DEFAULT_TEXT_MEMORY_MB = 2048


def clean_classname(classname: str) -> str:
    """Class names are written with spaces in prompts, as in CoOp (``Apply_Eye_Makeup`` -> ``Apply Eye Makeup``)."""
    return classname.replace("_", " ").strip()


def check_template(template: object, name: str = "template") -> str:
    """Require a prompt template with exactly one ``{}`` placeholder for the class name."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"Expected `{name}` to be a string with exactly one '{{}}' placeholder, got {template!r}.")
    return template


def format_prompt(template: str, classname: str) -> str:
    """Fill a zero-shot template with the cleaned class name (see `clean_classname`)."""
    return template.format(clean_classname(classname))
