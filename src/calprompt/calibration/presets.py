"""Named objectives (the paper's method, its ablations, the train-time baselines and the test-time regularizers of
C-TPT and O-TPT) with overridable constants.

A test-time run (`calprompt.experiments.protocols.test_time`) keeps a preset's regularizers and replaces its base
loss (cross-entropy, which needs labels) by TPT's entropy: ``none`` is plain TPT there, ``moments`` TPT + text moment
matching, ``c-tpt`` and ``o-tpt`` the published variants.

``build_objective("ours", lambda_mm=2.0)``. Each preset is a builder function registered here; its keyword
defaults are the reference constants and the only overrides it accepts. A preset whose published constants differ
per prompt-learning method declares them (``per_method``; ``"*"``: every other method), and
``build_objective(name, method=...)`` starts from those: DOR weighs its regularizer 8 for CoOp and 2 for the others.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calprompt._validation import check_non_negative, fail_unknown
from calprompt.calibration.objective import CalibrationObjective, Term

Builder = Callable[..., CalibrationObjective]


@dataclass(frozen=True)
class Preset:
    """A named objective builder; ``defaults`` are its overridable constants, ``per_method`` the constants that
    replace them for a method (``"*"``: any method not named)."""

    name: str
    build: Builder
    defaults: dict[str, float]
    summary: str
    per_method: dict[str, dict[str, float]] = field(default_factory=dict)

    def defaults_for(self, method: str | None) -> dict[str, float]:
        """The constants a run of ``method`` starts from (the builder's own without a method)."""
        if method is None or not self.per_method:
            return dict(self.defaults)
        return {**self.defaults, **self.per_method.get(method, self.per_method.get("*", {}))}


#: name -> preset, filled by :func:`register_preset` below.
OBJECTIVE_PRESETS: dict[str, Preset] = {}


def register_preset(
    name: str, per_method: Mapping[str, Mapping[str, float]] | None = None
) -> Callable[[Builder], Builder]:
    """Register a builder whose keyword-only defaults are its constants (``per_method``: see :class:`Preset`)."""
    if name in OBJECTIVE_PRESETS:
        raise ValueError(f"An objective preset named {name!r} is already registered; pick another name.")

    def decorator(build: Builder) -> Builder:
        defaults = {p.name: p.default for p in inspect.signature(build).parameters.values()}
        summary = (inspect.getdoc(build) or "").splitlines()[0] if build.__doc__ else ""
        methods = {method: dict(values) for method, values in (per_method or {}).items()}
        for method, values in methods.items():
            if not set(values) <= set(defaults):
                raise ValueError(f"Preset {name!r}: the constants for {method!r} must be among {sorted(defaults)}.")
        OBJECTIVE_PRESETS[name] = Preset(name, build, defaults, summary, methods)
        return build

    return decorator


def build_objective(name: str, *, method: str | None = None, **overrides: float) -> CalibrationObjective:
    """The preset ``name`` for prompt-learning ``method`` (its published constants, when they differ per method)
    with some constants overridden; bad names or values raise ``ValueError``."""
    if name not in OBJECTIVE_PRESETS:
        fail_unknown("objective", name, OBJECTIVE_PRESETS)
    preset = OBJECTIVE_PRESETS[name]
    unknown = sorted(set(overrides) - set(preset.defaults))
    if unknown:
        takes = ", ".join(preset.defaults) or "none"
        raise ValueError(f"Expected the overrides of objective {name!r} to be among ({takes}), got {unknown!r}.")
    start = preset.defaults_for(method)
    constants = {key: check_non_negative(value, key) for key, value in {**start, **overrides}.items()}
    objective = preset.build(**constants)
    return CalibrationObjective(objective.base_loss, objective.terms, name)


def _ce_plus(*weighted: tuple[Term, float]) -> CalibrationObjective:
    # A zero weight removes the term (and its inputs), so e.g. lambda_mm=0 gives the margin-only ablation.
    return CalibrationObjective(Term("cross_entropy"), tuple((t, w) for t, w in weighted if w > 0))


@register_preset("none")
def _none() -> CalibrationObjective:
    """Plain cross-entropy (the prompt learner's own loss)."""
    return _ce_plus()


@register_preset("ours")
def _ours(alpha: float = 0.1, beta: float = 0.01, lambda_mm: float = 5.0) -> CalibrationObjective:
    """CE + mean-variance margin penalty + lambda_mm * text moment matching (the paper's method)."""
    margin = Term.of("margin_mean_variance", alpha=alpha, beta=beta)
    return _ce_plus((margin, 1.0), (Term("text_moment_matching"), lambda_mm))


@register_preset("margin")
def _margin(alpha: float = 0.1, beta: float = 0.01) -> CalibrationObjective:
    """CE + mean-variance margin penalty only (ablation)."""
    return _ce_plus((Term.of("margin_mean_variance", alpha=alpha, beta=beta), 1.0))


@register_preset("moments")
def _moments(lambda_mm: float = 5.0) -> CalibrationObjective:
    """CE + lambda_mm * text moment matching only (ablation)."""
    return _ce_plus((Term("text_moment_matching"), lambda_mm))


@register_preset("c-tpt")
def _c_tpt(lambda_dispersion: float = 50.0) -> CalibrationObjective:
    """Base loss - lambda_dispersion * text feature dispersion (C-TPT; 50 fine-grained, 20 under shift)."""
    return _ce_plus((Term("negative_text_dispersion"), lambda_dispersion))


@register_preset("o-tpt")
def _o_tpt(lambda_orthogonality: float = 18.0) -> CalibrationObjective:
    """Base loss + lambda_orthogonality * O-TPT's Householder orthogonality value (as its code computes it)."""
    return _ce_plus((Term("householder_orthogonality"), lambda_orthogonality))


@register_preset("o-tpt-gram")
def _o_tpt_gram(lambda_orthogonality: float = 18.0) -> CalibrationObjective:
    """Base loss + lambda_orthogonality * ||T T^T - I||_F^2 (orthogonality in its Gram-residual form)."""
    return _ce_plus((Term("gram_orthogonality"), lambda_orthogonality))


@register_preset("mbls")
def _mbls(margin: float = 10.0, alpha: float = 0.1) -> CalibrationObjective:
    """CE + alpha * MbLS margin penalty."""
    return _ce_plus((Term.of("mbls_penalty", margin=margin), alpha))


@register_preset("zs-norm")
def _zs_norm() -> CalibrationObjective:
    """Cross-entropy on logits rescaled to the zero-shot range (ZS-Norm)."""
    return CalibrationObjective(Term("zs_norm_cross_entropy"))


@register_preset("penalty")
def _penalty(weight: float = 10.0) -> CalibrationObjective:
    """CE + weight * penalty on logits outside the zero-shot range."""
    return _ce_plus((Term("zs_range_penalty"), weight))


#: DOR's regularizer weight per method (DOR, ICML 2025: 8 for CoOp, 2 for the other prompt learners).
DOR_WEIGHTS = {"coop": {"weight": 8.0}, "*": {"weight": 2.0}}


@register_preset("dor", per_method=DOR_WEIGHTS)
def _dor(weight: float = 8.0) -> CalibrationObjective:
    """CE + weight * DOR outlier text regularizer (8 for CoOp, 2 for the other methods)."""
    return _ce_plus((Term("dor_loss"), weight))


@register_preset("ls")
def _ls(smoothing: float = 0.1) -> CalibrationObjective:
    """Label-smoothing cross-entropy."""
    return CalibrationObjective(Term.of("label_smoothing_cross_entropy", smoothing=smoothing))


@register_preset("focal")
def _focal(gamma: float = 3.0) -> CalibrationObjective:
    """Focal loss."""
    return CalibrationObjective(Term.of("focal_loss", gamma=gamma))


def describe_presets() -> dict[str, Any]:
    """name -> {"summary", "defaults"}, e.g. for a CLI listing."""
    return {
        name: {
            "summary": p.summary,
            "defaults": dict(p.defaults),
            **({"per_method": p.per_method} if p.per_method else {}),
        }
        for name, p in OBJECTIVE_PRESETS.items()
    }
