"""Conventions every layer shares: CLIP's image normalisation and how class names fill prompts.

They live here, below ``clip/``, ``data/`` and ``methods/``, so that none of those packages imports another for them.
"""

from __future__ import annotations

# CLIP's per-channel image mean and standard deviation (RGB, on [0, 1] pixel values).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Activations (MB) a gradient pass of the text encoder may keep before its prompts are encoded in chunks that are
# recomputed during backward (`calprompt.clip.text_plan`; the run setting ``text_memory_mb``).
DEFAULT_TEXT_MEMORY_MB = 2048
# Numeric precisions of a run: float32, or bf16/fp16 autocast (GPU only; the calibration terms stay in float32).
PRECISIONS = ("fp32", "bf16", "fp16")


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


# The evaluated splits of a run, as `metrics.json` keys them: ``base`` and ``novel`` test classes, each raw or
# post-hoc calibrated (``novel+ts+dac``: temperature scaling, then DAC). Reports, the command line and the protocols
# spell them through these names only.
BASE, NOVEL = "base", "novel"
#: Post-hoc variants of a run: (row suffix, key for base classes, key for novel classes). DAC only rescales classes
#: unseen while tuning, so on base classes it is the identity. Multi-isotonic regression and ProCal's two variants
#: (`calprompt.calibration.procal`) are fitted on the base validation split and applied to both.
POSTHOC_VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("", "base", "novel"),
    ("TS", "base+ts", "novel+ts"),
    ("DAC", "base", "novel+dac"),
    ("TS + DAC", "base+ts", "novel+ts+dac"),
    ("multi-isotonic", "base+multi_isotonic", "novel+multi_isotonic"),
    ("ProCal density", "base+procal_density", "novel+procal_density"),
    ("ProCal isotonic", "base+procal_isotonic", "novel+procal_isotonic"),
)
#: Every split key of the variants, base classes first: ``base``, ``base+ts``, ``novel``, ``novel+ts``, ...
SPLIT_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys([b for _, b, _ in POSTHOC_VARIANTS] + [n for _, _, n in POSTHOC_VARIANTS])
)


def split_label(key: str) -> str:
    """``novel+ts+dac`` -> ``novel + TS + DAC`` (how tables and the command line show a split)."""
    split, *steps = key.split("+")
    return " + ".join([split, *(step.upper() for step in steps)])


#: The protocol that tunes a prompt per test image, and the split key of its initial prompt's predictions on the same
#: test views (``base`` holds the tuned ones).
TEST_TIME_PROTOCOL, TEST_TIME_INIT = "test-time", "init"

#: Results of the tuned prompts on another dataset's test split (transfer, domain shift): ``eval:<dataset>``.
TARGET_PREFIX = "eval:"


def target_key(dataset: str) -> str:
    return f"{TARGET_PREFIX}{dataset}"
