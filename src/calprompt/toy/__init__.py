"""The embedded toy world: procedurally rendered images with captions, toy downstream datasets and a tiny CLIP.

Rendering and the datasets need only numpy and PIL; the model, pretraining and zero-shot helpers (which import
torch and open_clip) are loaded on first access, so registering the toy datasets stays cheap. Pretraining itself is
`calprompt.toy.pretrain.pretrain` (the package attribute `pretrain` is that module).
"""

from __future__ import annotations

import importlib
from typing import Any

from calprompt.toy.captions import make_caption
from calprompt.toy.downstream import (
    SPLIT_SIZES,
    TOY_DATASET_ALIASES,
    TOY_DATASET_SPECS,
    TOY_DATASETS,
    ToyDatasetSpec,
    build_toy_dataset,
    get_toy_spec,
    item_scene,
    load_toy_array,
    load_toy_image,
    render_items,
)
from calprompt.toy.render import COLOURS, SHAPES, SIZES, TEXTURES, Scene, SceneObject, render_scene, sample_scene
from calprompt.toy.styles import STYLES, apply_style
from calprompt.toy.world import DEFAULT_STYLE_WEIGHTS, pretraining_batch

_LAZY = {
    "TOY_CLIP_CONFIG": "calprompt.toy.model",
    "TOY_IMAGE_MEAN": "calprompt.toy.model",
    "TOY_IMAGE_SIZE": "calprompt.toy.model",
    "TOY_IMAGE_STD": "calprompt.toy.model",
    "build_toy_clip": "calprompt.toy.model",
    "images_to_tensor": "calprompt.toy.model",
    "load_toy_clip_model": "calprompt.toy.model",
    "save_toy_checkpoint": "calprompt.toy.model",
    "DEFAULT_RECIPE": "calprompt.toy.pretrain",
    "PretrainResult": "calprompt.toy.pretrain",
    "Stage": "calprompt.toy.pretrain",
    "scale_recipe": "calprompt.toy.pretrain",
    "toy_token_ids": "calprompt.toy.vocab",
    "evaluate_zero_shot": "calprompt.toy.zeroshot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'calprompt.toy' has no attribute {name!r}")


__all__ = [
    "COLOURS",
    "DEFAULT_STYLE_WEIGHTS",
    "SHAPES",
    "SIZES",
    "SPLIT_SIZES",
    "STYLES",
    "TEXTURES",
    "TOY_DATASETS",
    "TOY_DATASET_ALIASES",
    "TOY_DATASET_SPECS",
    "Scene",
    "SceneObject",
    "ToyDatasetSpec",
    "apply_style",
    "build_toy_dataset",
    "get_toy_spec",
    "item_scene",
    "load_toy_array",
    "load_toy_image",
    "make_caption",
    "pretraining_batch",
    "render_items",
    "render_scene",
    "sample_scene",
    *_LAZY,
]
