"""Toy downstream datasets: classes, splits, labels, virtual ids and deterministic rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calprompt.data.items import DatasetSplits
from calprompt.toy.downstream import (
    SPLIT_SIZES,
    TOY_DATASETS,
    build_toy_dataset,
    clear_render_cache,
    item_scene,
    load_toy_array,
    load_toy_image,
    parse_toy_item_id,
    render_items,
    toy_item_id,
)
from calprompt.toy.render import render_photo
from calprompt.toy.styles import sketch

EXPECTED_CLASSES = {"toy": 48, "toy-texture": 32, "toy-domain": 48}


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_class_counts_split_sizes_and_labels(name):
    data = build_toy_dataset(name)
    n = EXPECTED_CLASSES[name]
    assert isinstance(data, DatasetSplits) and data.name == name
    assert data.num_classes == n and len(set(data.classnames)) == n
    assert data.template == "a photo of a {}."
    for split in ("train", "val", "test"):
        items = getattr(data, split)
        assert len(items) == n * SPLIT_SIZES[split]
        assert np.bincount([it.label for it in items], minlength=n).tolist() == [SPLIT_SIZES[split]] * n
        assert all(data.classnames[it.label] == it.classname for it in items)
    ids = [it.impath for split in ("train", "val", "test") for it in getattr(data, split)]
    assert len(set(ids)) == len(ids)


def test_label_order_decides_the_base_novel_split():
    toy = build_toy_dataset("toy")
    m = math.ceil(toy.num_classes / 2)
    # shape-major labels: base classes hold every colour (and so every inverted complement) of three shapes
    assert {c.split()[1] for c in toy.classnames[:m]} == {"circle", "cross", "ring"}
    assert {c.split()[1] for c in toy.classnames[m:]} == {"square", "star", "triangle"}
    assert {c.split()[0] for c in toy.classnames[:m]} == {c.split()[0] for c in toy.classnames[m:]}
    assert toy.classnames[:3] == ("blue circle", "cyan circle", "green circle")
    assert build_toy_dataset("toy-domain").classnames == toy.classnames
    texture = build_toy_dataset("toy-texture")
    assert {c.split()[0] for c in texture.classnames[:16]} == {"checkered", "dotted"}
    assert {c.split()[0] for c in texture.classnames[16:]} == {"plain", "striped"}
    assert list(texture.classnames) == sorted(texture.classnames)  # naming order = label order


def test_label_order_must_permute_the_factors():
    from calprompt.toy.downstream import ToyDatasetSpec

    with pytest.raises(ValueError, match="label_order"):
        ToyDatasetSpec("x", ("colour", "shape"), "photo", label_order=("shape",))


def test_alias_names_the_default_dataset():
    assert build_toy_dataset("toy-colour-shape") == build_toy_dataset("toy")


def test_image_shows_the_item_class_in_the_dataset_style():
    data = build_toy_dataset("toy")
    for item in data.test[:60]:
        name, split, index, seed = parse_toy_item_id(item.impath)
        scene = item_scene(name, split, index, seed)
        assert f"{scene.colour} {scene.shape}" == item.classname and scene.style == "inverted"
        assert np.array_equal(load_toy_array(item.impath).astype(int), 255 - render_photo(scene).astype(int))
    item = build_toy_dataset("toy-texture").train[7]
    scene = item_scene(*parse_toy_item_id(item.impath))
    assert f"{scene.texture} {scene.colour}" == item.classname and scene.style == "photo"
    item = build_toy_dataset("toy-domain").val[3]
    scene = item_scene(*parse_toy_item_id(item.impath))
    assert np.array_equal(load_toy_array(item.impath), sketch(render_photo(scene)))


def test_rendering_an_id_twice_with_fresh_caches_gives_identical_bytes():
    data = build_toy_dataset("toy-texture")
    first = [data.image_loader(it.impath).tobytes() for it in data.train[:30]]
    clear_render_cache()
    second = [load_toy_image(it.impath).tobytes() for it in data.train[:30]]
    assert first == second
    assert len(set(first)) == 30
    assert load_toy_image(data.train[0].impath).size == (32, 32)


def test_world_seed_changes_images_but_not_labels():
    a, b = build_toy_dataset("toy", seed=0), build_toy_dataset("toy", seed=1)
    assert [it.label for it in a.test] == [it.label for it in b.test]
    assert "?seed=1" in b.test[0].impath and "?" not in a.test[0].impath
    assert render_items(a.test[:20]).tobytes() != render_items(b.test[:20]).tobytes()


def test_smaller_splits_are_a_prefix():
    small = build_toy_dataset("toy-domain", split_sizes={"train": 2})
    assert len(small.train) == 96 and small.train == build_toy_dataset("toy-domain").train[:96]


def test_memoised_arrays_cannot_be_modified():
    array = load_toy_array(toy_item_id("toy", "test", 0))
    with pytest.raises(ValueError):
        array[0, 0, 0] = 1


def test_render_items_stacks():
    items = build_toy_dataset("toy").val[:5]
    stacked = render_items(items)
    assert stacked.shape == (5, 32, 32, 3)
    assert np.array_equal(stacked[2], np.asarray(load_toy_image(items[2].impath)))
    assert render_items(()).shape == (0, 32, 32, 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_toy_dataset("toy-imagenet"), "toy dataset name"),
        (lambda: build_toy_dataset("toy", seed=-1), "seed"),
        (lambda: build_toy_dataset("toy", split_sizes={"dev": 3}), "split_sizes key"),
        (lambda: build_toy_dataset("toy", split_sizes={"train": 0}), "split_sizes"),
        (lambda: load_toy_image("toy://toy/dev/00001"), "toy image id"),
        (lambda: load_toy_image("/data/toy/0001.png"), "toy image id"),
        (lambda: load_toy_image("toy://nope/test/00001/blue-circle/inverted"), "toy dataset name"),
        # an id of another version of the datasets (other class at this index) is refused, never re-rendered
        (lambda: load_toy_image("toy://toy/test/00001/red-star/inverted"), "toy image id"),
        (lambda: load_toy_image("toy://toy/test/00001/cyan-circle/sketch"), "toy image id"),
    ],
)
def test_bad_input_is_named(call, message):
    assert build_toy_dataset("toy").test[1].impath == "toy://toy/test/00001/cyan-circle/inverted"
    with pytest.raises(ValueError, match=f"Expected `{message}"):
        call()
