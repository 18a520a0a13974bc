"""Training recipes as data (``recipes.yaml`` beside this module): epochs, batch size, learning rate and method
options per method, dataset and recipe name.

``paper`` follows the published ViT-B/16 base-to-novel recipes (papers and code); ``fast`` is a short schedule for
smoke runs, sweeps on CPUs and the toy world. Toy datasets (names starting with ``toy``) use their own entries because
the tiny backbone's logit scale and feature statistics differ from real CLIP's (see the README's toy-world section).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import yaml

from calprompt._validation import fail

RECIPE_NAMES = ("paper", "fast")
_RECIPE_FIELDS = ("epochs", "batch_size", "lr", "options")
_ENTRY_KEYS = (*RECIPE_NAMES, "options", "datasets", "toy")


@dataclass(frozen=True)
class Recipe:
    """One resolved schedule; ``options`` are method settings of the published recipe (user options win)."""

    epochs: int
    batch_size: int
    lr: float
    options: dict[str, Any] = field(default_factory=dict)


@functools.cache
def recipe_table() -> dict[str, dict[str, Any]]:
    """The parsed, checked ``recipes.yaml``: method -> entry."""
    text = resources.files("calprompt.experiments").joinpath("recipes.yaml").read_text(encoding="utf-8")
    table = yaml.safe_load(text)
    for method, entry in table.items():
        where = f"recipes.yaml: {method}"
        _check_keys(entry, _ENTRY_KEYS, where)
        for name in RECIPE_NAMES:
            if name not in entry:
                fail(f"{where}.{name}", "a recipe (epochs, batch_size, lr)", None)
            _check_recipe(entry[name], f"{where}.{name}", complete=True)
        for scope, departures in [("toy", entry.get("toy", {})), *entry.get("datasets", {}).items()]:
            _check_keys(departures, (*RECIPE_NAMES, "options"), f"{where}.{scope}")
            for name in RECIPE_NAMES:
                _check_recipe(departures.get(name, {}), f"{where}.{scope}.{name}", complete=False)
    return table


def resolve_recipe(recipe: str, method: str, dataset: str) -> Recipe:
    """The recipe for ``method`` on ``dataset``; unknown combinations raise with the known ones."""
    if recipe not in RECIPE_NAMES:
        fail("recipe", f"one of {RECIPE_NAMES}", recipe)
    table = recipe_table()
    if method not in table:
        fail("method", f"one with a recipe ({', '.join(sorted(table))}), or pass epochs/batch size/lr", method)
    entry = table[method]
    scope = entry.get("toy", {}) if dataset.startswith("toy") else entry.get("datasets", {}).get(dataset.lower(), {})
    values = {**entry[recipe], **scope.get(recipe, {})}
    options = {**entry.get("options", {}), **entry[recipe].get("options", {})}
    options.update({**scope.get("options", {}), **scope.get(recipe, {}).get("options", {})})
    resolved = Recipe(int(values["epochs"]), int(values["batch_size"]), float(values["lr"]))
    return replace(resolved, options=options)


def _check_keys(mapping: Any, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(mapping, dict):
        fail(where, "a mapping", type(mapping).__name__)
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        fail(where, f"keys among {allowed}", unknown)


def _check_recipe(values: Any, where: str, *, complete: bool) -> None:
    _check_keys(values, _RECIPE_FIELDS, where)
    missing = [key for key in ("epochs", "batch_size", "lr") if key not in values]
    if complete and missing:
        fail(where, "epochs, batch_size and lr", f"missing {missing}")
