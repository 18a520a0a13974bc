"""A training objective composed of one base loss and weighted regularizers, as frozen data.

The objective declares the union of its components' inputs (:attr:`CalibrationObjective.needs`) so that the training
loop computes only those (e.g. zero-shot logits only for ZS-Norm/Penalty), and serialises to a JSON-able dict for run
configs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

# Importing the component modules registers them.
import calprompt.calibration.baselines
import calprompt.calibration.outliers
import calprompt.calibration.terms
import calprompt.calibration.test_time  # noqa: F401
from calprompt._validation import fail
from calprompt.calibration.registry import INPUT_NAMES, TermSpec, get_term
from calprompt.calibration.terms import TextMoments


@dataclass(frozen=True)
class ObjectiveInputs:
    """The named inputs of an objective; ``None`` = not computed. Shapes: see :data:`registry.INPUT_NAMES`."""

    logits: Tensor | None = None
    labels: Tensor | None = None
    text_features: Tensor | None = None
    image_features: Tensor | None = None
    zs_image_features: Tensor | None = None
    zs_text_features: Tensor | None = None
    zs_text_moments: TextMoments | None = None
    zs_logits: Tensor | None = None
    outlier_text_features: Tensor | None = None
    zs_outlier_text_features: Tensor | None = None

    def as_dict(self) -> dict[str, Any]:
        """The inputs that are present."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Term:
    """A registered component with all its constants resolved (defaults filled in, validated)."""

    name: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        resolved = self.spec.resolve(self.params)
        object.__setattr__(self, "params", MappingProxyType(resolved))

    @classmethod
    def of(cls, name: str, **params: float) -> Term:
        """``Term.of("margin_mean_variance", alpha=0.2)``."""
        return cls(name, params)

    @property
    def spec(self) -> TermSpec:
        return get_term(self.name)

    @property
    def needs(self) -> tuple[str, ...]:
        return self.spec.needs

    def __call__(self, **inputs: Any) -> Tensor:
        return self.spec.fn(*(inputs[need] for need in self.needs), **self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}


def _check_weight(weight: Any, name: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < math.inf:
        fail(name, "a finite number > 0 (leave a term out rather than weigh it 0)", weight)
    return float(weight)


@dataclass(frozen=True)
class CalibrationObjective:
    """``loss = base_loss + sum_k weight_k * term_k``; call with the inputs in :attr:`needs`.

    Returns ``(loss, parts)``: ``loss`` is a 0-dim tensor to backpropagate, ``parts`` maps each component's name to
    its unweighted value and ``"loss"`` to the total, as plain floats for logging.
    """

    base_loss: Term
    terms: tuple[tuple[Term, float], ...] = ()
    name: str = "custom"

    def __post_init__(self) -> None:
        if not isinstance(self.base_loss, Term) or self.base_loss.spec.role != "base":
            fail("base_loss", "a Term whose component is a base loss", self.base_loss)
        pairs = tuple(
            (term, _check_weight(weight, f"weight of {getattr(term, 'name', term)}")) for term, weight in self.terms
        )
        for term, _ in pairs:
            if not isinstance(term, Term) or term.spec.role != "regularizer":
                fail("terms", "(Term, weight) pairs of regularizers", term)
        names = [self.base_loss.name, *(term.name for term, _ in pairs)]
        if len(set(names)) != len(names):
            fail("terms", "distinct components (their values are logged by name)", names)
        object.__setattr__(self, "terms", pairs)

    @property
    def needs(self) -> frozenset[str]:
        """The inputs the training loop must compute for this objective."""
        return frozenset(self.base_loss.needs).union(*(term.needs for term, _ in self.terms))

    def __call__(self, inputs: ObjectiveInputs | None = None, /, **kwargs: Any) -> tuple[Tensor, dict[str, float]]:
        loss, values = self.components(inputs, **kwargs)
        # One host transfer for all logged numbers instead of one sync per component.
        logged = torch.stack([v.detach().to(loss.dtype) for v in (*values.values(), loss)]).tolist()
        return loss, dict(zip([*values, "loss"], logged, strict=True))

    def components(self, inputs: ObjectiveInputs | None = None, /, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, {component name: unweighted 0-dim value})`` as tensors, with no host transfer (the training loop
        logs them together with the method's own terms)."""
        given = {**(inputs.as_dict() if inputs is not None else {}), **kwargs}
        unknown = sorted(set(given) - set(INPUT_NAMES))
        if unknown:
            fail("objective inputs", f"among {INPUT_NAMES}", unknown)
        for need in sorted(self.needs):
            if given.get(need) is None:
                users = [t.name for t in self._components() if need in t.needs]
                raise ValueError(f"Objective {self.name!r} needs the input `{need}` (for {', '.join(users)}); pass it.")
        values = [component(**given) for component in self._components()]
        loss = values[0]
        for value, (_, weight) in zip(values[1:], self.terms, strict=True):
            loss = loss + weight * value
        return loss, dict(zip([t.name for t in self._components()], values, strict=True))

    def _components(self) -> list[Term]:
        return [self.base_loss, *(term for term, _ in self.terms)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description with every constant resolved; inverse of :meth:`from_dict`."""
        return {
            "name": self.name,
            "base_loss": self.base_loss.to_dict(),
            "terms": [{**term.to_dict(), "weight": weight} for term, weight in self.terms],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationObjective:
        """Rebuild an objective from :meth:`to_dict` output (e.g. a saved run config)."""
        try:
            base = Term(data["base_loss"]["name"], data["base_loss"].get("params", {}))
            terms: Sequence[tuple[Term, float]] = [
                (Term(t["name"], t.get("params", {})), t["weight"]) for t in data.get("terms", [])
            ]
            return cls(base, tuple(terms), data.get("name", "custom"))
        except (KeyError, TypeError, AttributeError) as error:
            fail("objective config", "a dict as written by CalibrationObjective.to_dict()", f"{data!r} ({error})")
