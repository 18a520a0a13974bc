"""Datasets in the CoOp/Dassl layout, few-shot subsets, base/novel splits, transforms and the feature cache.

Typical use::

    splits = load_dataset("oxford_pets", root="~/data")          # train/val/test items + class names
    splits = sample_few_shot(splits, shots=16, seed=1)            # CoOp's exact 16-shot subset
    base = split_base_novel(splits, "base")                       # first ceil(n/2) classes, relabelled
"""

from calprompt.data.check import DatasetCheck, check_dataset
from calprompt.data.features import FeatureCache, FeatureKey, encode_items, item_ids
from calprompt.data.fewshot import base_novel_labels, few_shot_items, sample_few_shot, split_base_novel
from calprompt.data.items import DatasetSplits, ImageLoader, Item, format_prompt, open_rgb_image
from calprompt.data.registry import (
    BUILTIN_SPEC_MODULES,
    DatasetSpec,
    ExpectedPath,
    get_dataset_spec,
    list_datasets,
    load_dataset,
    register_dataset,
)
from calprompt.data.templates import ENSEMBLE_TEMPLATES
from calprompt.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    ImageTransformConfig,
    build_test_transform,
    build_train_transform,
)
from calprompt.data.views import ItemDataset, derive_view_seed, item_view_seed

__all__ = [
    "BUILTIN_SPEC_MODULES",
    "CLIP_MEAN",
    "CLIP_STD",
    "ENSEMBLE_TEMPLATES",
    "DatasetCheck",
    "DatasetSpec",
    "DatasetSplits",
    "ExpectedPath",
    "FeatureCache",
    "FeatureKey",
    "ImageLoader",
    "ImageTransformConfig",
    "Item",
    "ItemDataset",
    "base_novel_labels",
    "build_test_transform",
    "build_train_transform",
    "check_dataset",
    "derive_view_seed",
    "encode_items",
    "few_shot_items",
    "format_prompt",
    "get_dataset_spec",
    "item_ids",
    "item_view_seed",
    "list_datasets",
    "load_dataset",
    "open_rgb_image",
    "register_dataset",
    "sample_few_shot",
    "split_base_novel",
]
