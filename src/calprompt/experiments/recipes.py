"""Training recipes as data: epochs, batch size and learning rate per method, dataset family and recipe name.

``paper`` follows the published ViT-B/16 base-to-novel recipes (``prompt-methods.md``); ``fast`` is a short
schedule for smoke runs, sweeps on CPUs and the toy world. Toy datasets use their own numbers because the tiny
backbone's logit scale and feature statistics differ from real CLIP's (see the README's toy-world section).
"""

from __future__ import annotations

from dataclasses import dataclass

from calprompt._validation import fail


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float


RECIPE_NAMES = ("paper", "fast")

# method -> recipe name -> Recipe (real CLIP backbones).
_RECIPES: dict[str, dict[str, Recipe]] = {
    "zeroshot": {"paper": Recipe(epochs=0, batch_size=1, lr=0.0), "fast": Recipe(epochs=0, batch_size=1, lr=0.0)},
    "coop": {"paper": Recipe(epochs=200, batch_size=32, lr=0.002), "fast": Recipe(epochs=20, batch_size=32, lr=0.002)},
}

# Dataset-specific departures from the method's recipe: (method, dataset, recipe) -> Recipe.
_DATASET_RECIPES: dict[tuple[str, str, str], Recipe] = {
    ("coop", "imagenet", "paper"): Recipe(epochs=50, batch_size=32, lr=0.002),
}

# The toy world (every dataset whose name starts with "toy"): measured on the shipped toy backbone.
_TOY_RECIPES: dict[tuple[str, str], Recipe] = {
    ("coop", "paper"): Recipe(epochs=200, batch_size=32, lr=0.002),
    ("coop", "fast"): Recipe(epochs=50, batch_size=32, lr=0.002),
}


def resolve_recipe(recipe: str, method: str, dataset: str) -> Recipe:
    """The recipe for ``method`` on ``dataset``; unknown combinations raise with the known ones."""
    if recipe not in RECIPE_NAMES:
        fail("recipe", f"one of {RECIPE_NAMES}", recipe)
    if method not in _RECIPES:
        fail("method", f"one with a recipe ({', '.join(sorted(_RECIPES))}), or pass epochs/batch size/lr", method)
    if dataset.startswith("toy") and (method, recipe) in _TOY_RECIPES:
        return _TOY_RECIPES[(method, recipe)]
    return _DATASET_RECIPES.get((method, dataset, recipe), _RECIPES[method][recipe])


def has_recipe(recipe: str, method: str, dataset: str) -> bool:
    """Whether ``method`` has a recipe made for ``dataset``'s family (toy datasets need a toy recipe, unless the
    method does not train); sweeps over every registered method skip the others."""
    if method not in _RECIPES or recipe not in _RECIPES[method]:
        return False
    if dataset.startswith("toy"):
        return (method, recipe) in _TOY_RECIPES or _RECIPES[method][recipe].epochs == 0
    return True
