"""The configuration of one run, resolved to explicit values and hashed into a stable run id."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calprompt._validation import check_choice, check_dataclass_keys, check_positive_int, fail
from calprompt.experiments.recipes import RECIPE_NAMES, recipe_table, resolve_recipe

PROTOCOLS = ("base2novel", "all")


def default_cache_dir() -> Path:
    """Where frozen image features are cached: ``$CALPROMPT_CACHE`` or ``~/.cache/calprompt``."""
    return Path(os.environ.get("CALPROMPT_CACHE", Path.home() / ".cache" / "calprompt")).expanduser()


@dataclass(frozen=True)
class RunConfig:
    """Everything one run depends on. ``epochs``/``batch_size``/``lr`` left as ``None`` come from the recipe.

    ``protocol="base2novel"`` trains on the base half of the classes and evaluates base and novel test classes;
    ``"all"`` trains and evaluates on every class.
    """

    dataset: str = "toy"
    root: str | None = None
    method: str = "coop"
    method_options: dict[str, Any] = field(default_factory=dict)
    calibration: str = "ours"
    calibration_options: dict[str, float] = field(default_factory=dict)
    shots: int = 16
    seed: int = 1
    backbone: str = "toy"
    pretrained: str | None = None
    protocol: str = "base2novel"
    recipe: str = "paper"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "cpu"
    precision: str = "fp32"
    feature_cache: bool = True
    distinct_views: int | None = None
    num_workers: int = 0
    n_bins: int = 10
    skip_missing: bool = False  # drop listed images that are missing (counted and logged) instead of failing

    def __post_init__(self) -> None:
        check_positive_int(self.shots, "shots")
        check_choice(self.protocol, "protocol", PROTOCOLS)
        check_choice(self.recipe, "recipe", RECIPE_NAMES)
        check_positive_int(self.n_bins, "n_bins")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            fail("seed", "an integer >= 0", self.seed)
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 0):
            fail("epochs", "an integer >= 0", self.epochs)

    def resolved(self) -> RunConfig:
        """A copy with the recipe's epochs, batch size, learning rate and method options filled in."""
        if self.method not in recipe_table() and None not in (self.epochs, self.batch_size, self.lr):
            return self  # a method without a recipe entry runs on explicit settings
        recipe = resolve_recipe(self.recipe, self.method, self.dataset)
        return dataclasses.replace(
            self,
            epochs=recipe.epochs if self.epochs is None else self.epochs,
            batch_size=recipe.batch_size if self.batch_size is None else self.batch_size,
            lr=recipe.lr if self.lr is None else self.lr,
            method_options={**recipe.options, **self.method_options},
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        check_dataclass_keys(cls, data, "run config")
        return cls(**data)

    def run_id(self) -> str:
        """A short stable hash of what determines the results (device, workers and paths excluded)."""
        resolved = self.resolved().to_dict()
        for key in ("device", "num_workers", "root"):
            resolved.pop(key)
        canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
