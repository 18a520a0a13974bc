"""Few-shot subsets and the base/novel class split, written once for every dataset.

Both reproduce CoOp/Dassl exactly (``DatasetBase.generate_fewshot_dataset`` and ``OxfordPets.subsample_classes``),
so subsets and splits match published numbers item for item.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from calprompt._validation import check_choice, check_int, check_positive_int
from calprompt.data.items import DatasetSplits, Item

Subsample = Literal["all", "base", "new"]


def few_shot_items(items: Sequence[Item], shots: int, rng: random.Random) -> tuple[Item, ...]:
    """``shots`` items per class: ``rng.sample`` per class in order of first appearance, all items if fewer.

    A class with fewer than ``shots`` items draws nothing from ``rng``, exactly as in Dassl.
    """
    by_label: dict[int, list[Item]] = {}  # dicts keep first-appearance order, like Dassl's defaultdict
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    chosen: list[Item] = []
    for group in by_label.values():
        chosen.extend(rng.sample(group, shots) if len(group) >= shots else group)
    return tuple(chosen)


def sample_few_shot(splits: DatasetSplits, shots: int, seed: int) -> DatasetSplits:
    """The K-shot subset CoOp trains on: train with ``shots`` per class, then val with ``min(shots, 4)``.

    Both draws come from one stream seeded with ``seed``; ``random.Random(seed)`` yields the same stream as CoOp's
    ``random.seed(seed)`` followed by ``random.sample`` calls (tested), without touching the global generator.
    Datasets whose validation split is their test split (ImageNet) keep it whole. Test is never subsampled.
    """
    check_positive_int(shots, "shots")
    check_int(seed, "seed")
    rng = random.Random(seed)
    train = few_shot_items(splits.train, shots, rng)
    val = splits.val if splits.val_is_test else few_shot_items(splits.val, min(shots, 4), rng)
    return splits.with_splits(train=train, val=val)


def base_novel_labels(labels: Sequence[int], subsample: Subsample) -> list[int]:
    """The original labels kept by ``subsample``: sorted, the first ``ceil(n / 2)`` are base, the rest new."""
    ordered = sorted(set(labels))
    half = math.ceil(len(ordered) / 2)
    if subsample == "base":
        return ordered[:half]
    if subsample == "new":
        return ordered[half:]
    return ordered


def split_base_novel(splits: DatasetSplits, subsample: Subsample) -> DatasetSplits:
    """Keep the base or the new half of the classes in train, val and test, relabelled from 0.

    As in CoOp the halves are taken over the labels present in the (few-shot) train split; a dataset without train
    items (a test-only target) uses all of its class labels. ``"all"`` returns ``splits`` unchanged.
    """
    check_choice(subsample, "subsample", ("all", "base", "new"))
    if subsample == "all":
        return splits
    present = [item.label for item in splits.train] or list(range(splits.num_classes))
    kept = base_novel_labels(present, subsample)
    relabel = {old: new for new, old in enumerate(kept)}

    def subset(items: tuple[Item, ...]) -> tuple[Item, ...]:
        return tuple(replace(item, label=relabel[item.label]) for item in items if item.label in relabel)

    test = subset(splits.test)
    return splits.with_splits(
        classnames=tuple(splits.classnames[old] for old in kept),
        train=subset(splits.train),
        val=test if splits.val_is_test else subset(splits.val),
        test=test,
    )
