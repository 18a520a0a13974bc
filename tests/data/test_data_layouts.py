"""Every layout is read from a miniature replica: class names (with CoOp's renamings), labels, counts, templates."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from calprompt.data import format_prompt, get_dataset_spec, list_datasets, load_dataset
from tests.data.replicas import BENCHMARK_BUILDERS, write_image

BENCHMARKS = [
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
    "imagenet_v2",
    "imagenet_sketch",
    "imagenet_a",
    "imagenet_r",
]


def test_every_benchmark_has_a_replica_and_a_spec():
    assert len(BENCHMARK_BUILDERS) == len(BENCHMARKS)
    registered = list_datasets()
    for name in [*BENCHMARKS, "folder", "csv"]:
        assert name in registered
    assert {name for name in registered if get_dataset_spec(name).benchmark} == set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_replica_loads_with_expected_classes_labels_and_counts(replica_root, name):
    root, expected = replica_root
    want = expected[name]
    splits = load_dataset(name, root)
    assert splits.name == name
    assert splits.classnames == want.classnames
    assert (len(splits.train), len(splits.val), len(splits.test)) == want.counts
    assert splits.val_is_test == want.val_is_test
    for split, labels in want.labels.items():
        assert [item.label for item in getattr(splits, split)] == labels, split
    for item in (*splits.train, *splits.val, *splits.test):
        # Every item carries the class name of its label, and points at a real file under the data root.
        assert splits.classnames[item.label] == item.classname
        assert os.path.isabs(item.impath) and os.path.isfile(item.impath)
        assert item.impath.startswith(str(root))
    assert splits.missing_files == ()


def test_imagenet_val_is_its_test_set(replica_root):
    root, _ = replica_root
    splits = load_dataset("imagenet", root)
    assert splits.val == splits.test
    assert all("/images/val/" in item.impath for item in splits.test)
    assert all("/images/train/" in item.impath for item in splits.train)
    assert not any(item.impath.endswith(".DS_Store") for item in splits.train)


def test_split_paths_are_joined_to_the_image_folder(replica_root):
    root, _ = replica_root
    cars = load_dataset("stanford_cars", root)
    assert cars.train[0].impath == str(root / "stanford_cars" / "cars_train" / "00001.jpg")
    sun = load_dataset("sun397", root)
    assert sun.train[1].impath == str(root / "sun397/SUN397/b/balcony/exterior/sun_aabkmvsgbgwzqmro.jpg")
    aircraft = load_dataset("fgvc_aircraft", root)
    assert aircraft.train[0].impath == str(root / "fgvc_aircraft/images/1025794.jpg")


@pytest.mark.parametrize(
    ("name", "template"),
    [
        ("oxford_pets", "a photo of a {}, a type of pet."),
        ("oxford_flowers", "a photo of a {}, a type of flower."),
        ("fgvc_aircraft", "a photo of a {}, a type of aircraft."),
        ("dtd", "{} texture."),
        ("eurosat", "a centered satellite photo of {}."),
        ("food101", "a photo of {}, a type of food."),
        ("ucf101", "a photo of a person doing {}."),
        ("imagenet", "a photo of a {}."),
        ("caltech101", "a photo of a {}."),
        ("stanford_cars", "a photo of a {}."),
        ("sun397", "a photo of a {}."),
        ("imagenet_a", "a photo of a {}."),
    ],
)
def test_templates_follow_coop(replica_root, name, template):
    root, _ = replica_root
    assert get_dataset_spec(name).template == template
    assert load_dataset(name, root).template == template


def test_prompts_replace_underscores(replica_root):
    root, _ = replica_root
    assert load_dataset("ucf101", root).prompts()[0] == "a photo of a person doing Apply Eye Makeup."
    assert load_dataset("food101", root).prompts() == [
        "a photo of apple pie, a type of food.",
        "a photo of baby back ribs, a type of food.",
    ]
    assert format_prompt("{} texture.", "banded") == "banded texture."


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("OxfordPets", "oxford_pets"),
        ("DescribableTextures", "dtd"),
        ("OxfordFlowers", "oxford_flowers"),
        ("Flowers102", "oxford_flowers"),
        ("FGVCAircraft", "fgvc_aircraft"),
        ("ImageNetV2", "imagenet_v2"),
        ("ImageNetSketch", "imagenet_sketch"),
        ("ImageNetA", "imagenet_a"),
        ("ImageNetR", "imagenet_r"),
        ("Caltech101", "caltech101"),
        ("StanfordCars", "stanford_cars"),
        ("EuroSAT", "eurosat"),
        ("UCF101", "ucf101"),
        ("SUN397", "sun397"),
        ("Food101", "food101"),
        ("oxford-pets", "oxford_pets"),
        ("IMAGENET", "imagenet"),
    ],
)
def test_coop_class_names_are_aliases(alias, name):
    assert get_dataset_spec(alias).name == name


def test_items_open_as_rgb_images(replica_root):
    root, _ = replica_root
    splits = load_dataset("oxford_pets", root)
    image = splits.image_loader(splits.train[0].impath)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (12, 9)


def test_image_folder_with_splits(tmp_path):
    for split, classes in (("train", ("dog", "cat")), ("test", ("cat", "dog", "golden_retriever"))):
        for index, classname in enumerate(classes):
            write_image(tmp_path / split / classname / f"{index}.png", index)
            write_image(tmp_path / split / classname / f"{index}b.jpg", index)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    splits = load_dataset("folder", tmp_path)
    assert splits.classnames == ("cat", "dog", "golden_retriever")  # sorted folder names over all splits
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 0, 6)
    assert [item.label for item in splits.train] == [0, 0, 1, 1]
    assert [item.label for item in splits.test] == [0, 0, 1, 1, 2, 2]
    assert not any(item.impath.endswith(".txt") for item in splits.train)


def test_flat_image_folder_is_test_only(tmp_path):
    write_image(tmp_path / "zebra" / "a.png")
    write_image(tmp_path / "ant" / "a.png")
    splits = load_dataset("imagefolder", tmp_path)
    assert splits.classnames == ("ant", "zebra")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (0, 0, 2)


def test_csv_with_labels_and_classnames_file(tmp_path):
    for index in range(4):
        write_image(tmp_path / "imgs" / f"{index}.png", index)
    (tmp_path / "classnames.txt").write_text("red car\nblue_bike\n")
    (tmp_path / "train.csv").write_text("path,label\nimgs/0.png,1\nimgs/1.png,0\n")
    (tmp_path / "test.csv").write_text(f"path,label\n{tmp_path / 'imgs/2.png'},0\nimgs/3.png,1\n")
    splits = load_dataset("csv", tmp_path)
    assert splits.classnames == ("red car", "blue_bike")
    assert [(item.label, item.classname) for item in splits.train] == [(1, "blue_bike"), (0, "red car")]
    assert splits.train[0].impath == str(tmp_path / "imgs" / "0.png")
    assert splits.test[0].impath == str(tmp_path / "imgs" / "2.png")
    assert len(splits.val) == 0


def test_csv_with_classnames_column(tmp_path):
    for index in range(3):
        write_image(tmp_path / f"{index}.jpg", index)
    (tmp_path / "data.csv").write_text("path,classname\n0.jpg,zebra\n1.jpg,ant\n2.jpg,zebra\n")
    splits = load_dataset("csv", tmp_path / "data.csv")  # a single file is read as the test split
    assert splits.classnames == ("ant", "zebra")
    assert [item.label for item in splits.test] == [1, 0, 1]
