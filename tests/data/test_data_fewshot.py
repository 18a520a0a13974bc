"""Few-shot sampling and base/novel splits against a straightforward re-implementation of CoOp/Dassl."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest

from calprompt.data import DatasetSplits, Item, get_dataset_spec, load_dataset, sample_few_shot, split_base_novel


def coop_few_shot(train, val, shots, seed, sample_val=True):
    """The published algorithm, written plainly: seed the global RNG, then per split and class `random.sample`."""
    random.seed(seed)

    def generate(source, k):
        tracker = defaultdict(list)
        for item in source:
            tracker[item.label].append(item)
        dataset = []
        for _label, items in tracker.items():
            if len(items) >= k:
                dataset.extend(random.sample(items, k))
            else:
                dataset.extend(items)
        return dataset

    new_train = generate(train, shots)
    new_val = generate(val, min(shots, 4)) if sample_val else list(val)
    return new_train, new_val


def coop_subsample(datasets, subsample):
    """CoOp's OxfordPets.subsample_classes, written plainly (labels taken from the first dataset)."""
    labels = sorted({item.label for item in datasets[0]})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {y: new for new, y in enumerate(selected)}
    return [
        [Item(item.impath, relabeler[item.label], item.classname) for item in dataset if item.label in selected]
        for dataset in datasets
    ]


def synthetic_splits(num_classes, seed, val_is_test=False):
    """Items in a shuffled label order with uneven class sizes (some below any K tested, some empty in val)."""
    rng = random.Random(1000 + seed)
    names = tuple(f"class_{label}" for label in range(num_classes))

    def make(split, sizes):
        items = [
            Item(f"/data/{split}/{label}/{index}.jpg", label, names[label])
            for label, size in enumerate(sizes)
            for index in range(size)
        ]
        rng.shuffle(items)  # first-appearance order differs from label order
        return tuple(items)

    train_sizes = [rng.choice([1, 2, 3, 5, 9, 17, 30]) for _ in range(num_classes)]
    val_sizes = [rng.choice([0, 1, 3, 6]) for _ in range(num_classes)]
    test = make("test", [4] * num_classes)
    return DatasetSplits(
        name="synthetic",
        classnames=names,
        train=make("train", train_sizes),
        val=test if val_is_test else make("val", val_sizes),
        test=test,
        val_is_test=val_is_test,
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_few_shot_matches_coop_item_for_item(seed, shots):
    splits = synthetic_splits(num_classes=23, seed=seed)
    want_train, want_val = coop_few_shot(splits.train, splits.val, shots, seed)
    got = sample_few_shot(splits, shots=shots, seed=seed)
    assert list(got.train) == want_train
    assert list(got.val) == want_val
    assert got.test == splits.test
    assert got.classnames == splits.classnames
    # Classes with fewer than K items keep all of them; the others get exactly K (val: min(K, 4)).
    for label in range(splits.num_classes):
        available = sum(item.label == label for item in splits.train)
        assert sum(item.label == label for item in got.train) == min(available, shots)


def test_few_shot_depends_on_seed_and_leaves_global_rng_alone():
    splits = synthetic_splits(num_classes=10, seed=0)
    random.seed(123)
    state = random.getstate()
    first = sample_few_shot(splits, shots=4, seed=1)
    assert random.getstate() == state
    assert sample_few_shot(splits, shots=4, seed=1) == first
    assert sample_few_shot(splits, shots=4, seed=2).train != first.train


def test_local_generator_equals_globally_seeded_stream():
    population = list(range(50))
    for seed in (0, 1, 7, 2**40):
        random.seed(seed)
        global_draws = [random.sample(population, 5), random.sample(population[:9], 4)]
        rng = random.Random(seed)
        assert [rng.sample(population, 5), rng.sample(population[:9], 4)] == global_draws


def test_imagenet_protocol_samples_train_only():
    splits = synthetic_splits(num_classes=12, seed=5, val_is_test=True)
    want_train, _ = coop_few_shot(splits.train, splits.val, 16, 3, sample_val=False)
    got = sample_few_shot(splits, shots=16, seed=3)
    assert list(got.train) == want_train
    assert got.val == splits.test


def test_few_shot_on_a_loaded_replica(replica_root):
    root, _ = replica_root
    splits = load_dataset("oxford_pets", root)
    want_train, want_val = coop_few_shot(splits.train, splits.val, 1, 2)
    got = sample_few_shot(splits, shots=1, seed=2)
    assert list(got.train) == want_train and list(got.val) == want_val
    assert len(got.train) == 3  # one per class


@pytest.mark.parametrize("shots", [0, -1, 2.0, True])
def test_few_shot_rejects_bad_shots(shots):
    with pytest.raises(ValueError, match="Expected `shots` to be a positive integer"):
        sample_few_shot(synthetic_splits(3, 0), shots=shots, seed=1)


def test_few_shot_rejects_non_integer_seed():
    with pytest.raises(ValueError, match="Expected `seed` to be an integer, got '1'"):
        sample_few_shot(synthetic_splits(3, 0), shots=1, seed="1")


# Class counts and base/new sizes as published with the CoOp splits (docs/data.md lists the benchmarks).
BASE_NOVEL_TABLE = [
    ("imagenet", 1000, 500, 500),
    ("caltech101", 100, 50, 50),
    ("oxford_pets", 37, 19, 18),
    ("stanford_cars", 196, 98, 98),
    ("oxford_flowers", 102, 51, 51),
    ("food101", 101, 51, 50),
    ("fgvc_aircraft", 100, 50, 50),
    ("sun397", 397, 199, 198),
    ("dtd", 47, 24, 23),
    ("eurosat", 10, 5, 5),
    ("ucf101", 101, 51, 50),
]


@pytest.mark.parametrize(("name", "num_classes", "base", "new"), BASE_NOVEL_TABLE)
def test_base_novel_sizes_for_real_class_counts(name, num_classes, base, new):
    assert get_dataset_spec(name).num_classes == num_classes
    splits = sample_few_shot(synthetic_splits(num_classes, seed=num_classes), shots=4, seed=1)
    base_splits = split_base_novel(splits, "base")
    new_splits = split_base_novel(splits, "new")
    assert (base_splits.num_classes, new_splits.num_classes) == (base, new)
    assert base_splits.classnames == splits.classnames[:base]
    assert new_splits.classnames == splits.classnames[base:]
    for part, offset in ((base_splits, 0), (new_splits, base)):
        for split in ("train", "val", "test"):
            want = coop_subsample([splits.train, getattr(splits, split)], "base" if offset == 0 else "new")[1]
            assert list(getattr(part, split)) == want, split
            for item in getattr(part, split):
                assert part.classnames[item.label] == item.classname == f"class_{item.label + offset}"


def test_base_novel_all_is_identity_and_val_follows_test_for_imagenet():
    splits = synthetic_splits(8, seed=1, val_is_test=True)
    assert split_base_novel(splits, "all") is splits
    base = split_base_novel(splits, "base")
    assert base.val == base.test and {item.label for item in base.test} == {0, 1, 2, 3}


def test_base_novel_uses_labels_present_in_train_like_coop():
    # Only classes 0, 2, 5, 6 have training items: CoOp splits those four, not the six class names.
    names = tuple("abcdefg")
    train = tuple(Item(f"/t/{label}.jpg", label, names[label]) for label in (6, 0, 2, 5))
    test = tuple(Item(f"/s/{label}.jpg", label, names[label]) for label in range(7))
    splits = DatasetSplits(name="x", classnames=names, train=train, val=(), test=test)
    base = split_base_novel(splits, "base")
    assert base.classnames == ("a", "c")
    assert list(base.test) == coop_subsample([train, test], "base")[1]
    new = split_base_novel(splits, "new")
    assert new.classnames == ("f", "g")
    assert [item.classname for item in new.train] == ["g", "f"]


def test_base_novel_rejects_unknown_subsample():
    with pytest.raises(ValueError, match="Expected `subsample` to be one of 'all', 'base', 'new', got 'novel'"):
        split_base_novel(synthetic_splits(4, 0), "novel")
