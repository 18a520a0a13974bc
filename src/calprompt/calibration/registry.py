"""The registry of train-time loss components and the vocabulary of inputs they may ask for.

A component is a pure tensor function whose leading positional arguments are named inputs from :data:`INPUT_NAMES`
and whose keyword arguments with defaults are its constants (``alpha``, ``margin``, ...). Declaring the inputs lets
the training loop compute only what the chosen objective needs (e.g. no frozen zero-shot logits unless a ZS-Norm or
Penalty component is present).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from calprompt._validation import check_non_negative, fail

#: Everything a component (or a method's own loss, `PromptMethod.needs`) may need, as computed by the training loop:
#: ``logits`` (B, C) tuned scaled logits; ``labels`` (B,) int64; ``text_features`` tuned class text features,
#: (C, D) or per image (B, C, D); ``image_features`` (B, D) the batch's image features as the method encodes them;
#: ``zs_image_features`` (B, D) frozen CLIP's image features of the same augmented images; ``zs_text_features``
#: (C, D) frozen zero-shot text features of the dataset template (once per class list); ``zs_text_moments``
#: :class:`~calprompt.calibration.terms.TextMoments` of those (once per class list); ``zs_logits`` (B, C) frozen
#: zero-shot logits of the same images; ``outlier_text_features`` (K, D) tuned text features of the step's K sampled
#: outlier class names (DOR) and ``zs_outlier_text_features`` (K, D) the frozen zero-shot text features of the same
#: names. Features are L2-normalised.
INPUT_NAMES: tuple[str, ...] = (
    "logits",
    "labels",
    "text_features",
    "image_features",
    "zs_image_features",
    "zs_text_features",
    "zs_text_moments",
    "zs_logits",
    "outlier_text_features",
    "zs_outlier_text_features",
)

#: DOR's inputs: named here for its term, computed by the training loop once DOR is wired into it (not yet).
OUTLIER_INPUTS: tuple[str, ...] = ("outlier_text_features", "zs_outlier_text_features")

Role = Literal["base", "regularizer"]

#: A check for one constant: ``check(value, name) -> float``, raising the project's ``ValueError`` when invalid.
ConstantCheck = Callable[[Any, str], float]


@dataclass(frozen=True)
class TermSpec:
    """A registered component: its function, the inputs it takes (in positional order) and its constants."""

    name: str
    fn: Callable[..., Any]
    needs: tuple[str, ...]
    role: Role
    defaults: Mapping[str, float]
    checks: Mapping[str, ConstantCheck]

    def resolve(self, constants: Mapping[str, Any]) -> dict[str, float]:
        """Return the defaults updated with ``constants``, each validated; unknown names raise."""
        unknown = sorted(set(constants) - set(self.defaults))
        if unknown:
            takes = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"Expected the constants of `{self.name}` to be among ({takes}), got {unknown!r}.")
        resolved = dict(self.defaults)
        for key, value in constants.items():
            resolved[key] = self.checks[key](value, key)
        return resolved


#: name -> spec, filled by :func:`register_term` where each component is defined.
TERMS: dict[str, TermSpec] = {}


def register_term(
    name: str,
    *,
    needs: tuple[str, ...],
    role: Role = "regularizer",
    checks: Mapping[str, ConstantCheck] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a component under ``name``; the decorated function is returned unchanged.

    ``needs`` names the inputs bound, in order, to the function's leading positional parameters. Every parameter
    with a default is a constant, validated by ``checks[param]`` (default: a finite number >= 0).
    """
    if name in TERMS:
        raise ValueError(f"A loss component named {name!r} is already registered; pick another name.")
    for need in needs:
        if need not in INPUT_NAMES:
            fail("needs", f"names from {INPUT_NAMES}", need)
    checks = dict(checks or {})

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(fn).parameters.values())
        if len(params) < len(needs) or any(p.default is not inspect.Parameter.empty for p in params[: len(needs)]):
            raise TypeError(f"{fn.__qualname__} must take the {len(needs)} inputs {needs} as its first parameters.")
        defaults = {p.name: p.default for p in params[len(needs) :] if p.default is not inspect.Parameter.empty}
        stray = set(checks) - set(defaults)
        if stray:
            raise TypeError(f"{fn.__qualname__} has checks for parameters it does not take: {sorted(stray)}.")
        all_checks = {key: checks.get(key, check_non_negative) for key in defaults}
        TERMS[name] = TermSpec(name, fn, tuple(needs), role, defaults, all_checks)
        return fn

    return decorator


def get_term(name: str) -> TermSpec:
    """Look up a registered component; an unknown name raises listing the known ones."""
    if name not in TERMS:
        fail("term", f"one of {', '.join(sorted(TERMS))}", name)
    return TERMS[name]
