"""Where the built-in datasets and embedded backbones are defined, as module paths imported on first lookup.

The layers depend one way: ``toy/`` builds on ``data/`` and ``clip/`` (it defines datasets and a backbone with their
types); neither ``data/`` nor ``clip/`` mentions ``toy/``. Their registries read these lists, which sit above all
three packages.
"""

from __future__ import annotations

# Modules whose import registers the built-in dataset specs (in this order).
DATASET_MODULES: tuple[str, ...] = ("calprompt.data.benchmarks", "calprompt.data.custom", "calprompt.toy.datasets")

# Backbone names served by a loader function shipped with the package: name -> "module:function".
EMBEDDED_BACKBONES: dict[str, str] = {"toy": "calprompt.toy.backbone:load_toy_backbone"}
