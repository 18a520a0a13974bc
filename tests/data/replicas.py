"""Miniature replicas of every dataset layout: real folder and file names, real JSON/txt formats, tiny images.

Each builder writes one dataset under a data root and returns what a correct reader must produce, written down
here by hand (class names after CoOp's renamings, labels, split sizes) rather than computed by calprompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


@dataclass
class Expected:
    name: str
    classnames: tuple[str, ...]
    counts: tuple[int, int, int]  # train, val, test
    labels: dict[str, list[int]] = field(default_factory=dict)  # split -> labels in item order, where fixed
    val_is_test: bool = False


def write_image(path: Path, shade: int = 0) -> Path:
    """A tiny RGB image; the format follows the extension (JPEG for .jpg/.jpeg/.JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (12, 9), color=(shade % 256, (3 * shade) % 256, 90))
    image.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None)
    return path


def _split_json(root: Path, dataset_dir: str, image_dir: str, split_file: str, entries: dict) -> None:
    """Write CoOp's split file and one image per entry (paths relative to the image folder)."""
    folder = root / dataset_dir
    for split_entries in entries.values():
        for index, (impath, _label, _name) in enumerate(split_entries):
            write_image(folder / image_dir / impath, index)
    (folder / split_file).write_text(json.dumps(entries))


def make_caltech101(root: Path) -> Expected:
    # Labels as in CoOp's split: sorted folder names (upper case first) without BACKGROUND_Google and Faces_easy.
    # The renamings are written here in their raw form to exercise them (CoOp's own file already holds new names).
    train = [
        ["Faces/image_0001.jpg", 0, "Faces"],
        ["Faces/image_0002.jpg", 0, "face"],
        ["Leopards/image_0001.jpg", 1, "Leopards"],
        ["Motorbikes/image_0001.jpg", 2, "motorbike"],
        ["accordion/image_0001.jpg", 3, "accordion"],
        ["airplanes/image_0001.jpg", 4, "airplanes"],
    ]
    val = [["accordion/image_0002.jpg", 3, "accordion"]]
    test = [["airplanes/image_0002.jpg", 4, "airplane"], ["Faces/image_0003.jpg", 0, "face"]]
    _split_json(
        root,
        "caltech-101",
        "101_ObjectCategories",
        "split_zhou_Caltech101.json",
        {"train": train, "val": val, "test": test},
    )
    # The ignored categories exist on disk but are in no split.
    write_image(root / "caltech-101/101_ObjectCategories/BACKGROUND_Google/image_0001.jpg")
    write_image(root / "caltech-101/101_ObjectCategories/Faces_easy/image_0001.jpg")
    return Expected(
        "caltech101",
        ("face", "leopard", "motorbike", "accordion", "airplane"),
        (6, 1, 2),
        {"train": [0, 0, 1, 2, 3, 4], "test": [4, 0]},
    )


def make_oxford_pets(root: Path) -> Expected:
    train = [
        ["Abyssinian_1.jpg", 0, "abyssinian"],
        ["american_bulldog_10.jpg", 1, "american_bulldog"],
        ["Abyssinian_2.jpg", 0, "abyssinian"],
        ["yorkshire_terrier_3.jpg", 2, "yorkshire_terrier"],
    ]
    val = [["american_bulldog_11.jpg", 1, "american_bulldog"]]
    test = [["Abyssinian_100.jpg", 0, "abyssinian"], ["yorkshire_terrier_9.jpg", 2, "yorkshire_terrier"]]
    _split_json(root, "oxford_pets", "images", "split_zhou_OxfordPets.json", {"train": train, "val": val, "test": test})
    (root / "oxford_pets/annotations").mkdir()
    return Expected(
        "oxford_pets", ("abyssinian", "american_bulldog", "yorkshire_terrier"), (4, 1, 2), {"train": [0, 1, 0, 2]}
    )


def make_stanford_cars(root: Path) -> Expected:
    train = [
        ["cars_train/00001.jpg", 0, "2012 AM General Hummer SUV"],
        ["cars_train/00002.jpg", 1, "2012 Acura RL Sedan"],
    ]
    val = [["cars_train/00003.jpg", 1, "2012 Acura RL Sedan"]]
    test = [["cars_test/00001.jpg", 0, "2012 AM General Hummer SUV"]]
    _split_json(root, "stanford_cars", "", "split_zhou_StanfordCars.json", {"train": train, "val": val, "test": test})
    return Expected("stanford_cars", ("2012 AM General Hummer SUV", "2012 Acura RL Sedan"), (2, 1, 1))


def make_oxford_flowers(root: Path) -> Expected:
    train = [["image_06734.jpg", 0, "pink primrose"], ["image_06735.jpg", 1, "hard-leaved pocket orchid"]]
    val = [["image_06736.jpg", 0, "pink primrose"]]
    test = [["image_06737.jpg", 1, "hard-leaved pocket orchid"], ["image_06738.jpg", 1, "hard-leaved pocket orchid"]]
    _split_json(
        root, "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", {"train": train, "val": val, "test": test}
    )
    (root / "oxford_flowers/cat_to_name.json").write_text(json.dumps({"1": "pink primrose"}))
    return Expected("oxford_flowers", ("pink primrose", "hard-leaved pocket orchid"), (2, 1, 2))


def make_food101(root: Path) -> Expected:
    train = [["apple_pie/1005649.jpg", 0, "apple_pie"], ["baby_back_ribs/1005293.jpg", 1, "baby_back_ribs"]]
    val = [["apple_pie/1011328.jpg", 0, "apple_pie"]]
    test = [["baby_back_ribs/1007102.jpg", 1, "baby_back_ribs"]]
    _split_json(root, "food-101", "images", "split_zhou_Food101.json", {"train": train, "val": val, "test": test})
    return Expected("food101", ("apple_pie", "baby_back_ribs"), (2, 1, 1))


def make_fgvc_aircraft(root: Path) -> Expected:
    folder = root / "fgvc_aircraft"
    folder.mkdir(parents=True)
    # Variant names may contain spaces and "/"; the line index is the label.
    (folder / "variants.txt").write_text("707-320\nF-16A/B\nF/A-18\nFalcon 2000\n")
    lists = {
        "train": ["1025794 707-320", "1340192 F/A-18", "0056978 Falcon 2000", "0062765 F-16A/B"],
        "val": ["0064145 Falcon 2000"],
        "test": ["1514522 F/A-18", "0057745 707-320"],
    }
    for split, lines in lists.items():
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        for index, line in enumerate(lines):
            write_image(folder / "images" / f"{line.split(' ')[0]}.jpg", index)
    return Expected(
        "fgvc_aircraft",
        ("707-320", "F-16A/B", "F/A-18", "Falcon 2000"),
        (4, 1, 2),
        {"train": [0, 2, 3, 1], "val": [3], "test": [2, 0]},
    )


def make_sun397(root: Path) -> Expected:
    train = [
        ["a/abbey/sun_aaalbzqrimafwbiv.jpg", 0, "abbey"],
        ["b/balcony/exterior/sun_aabkmvsgbgwzqmro.jpg", 1, "exterior balcony"],
        ["a/apse/indoor/sun_aacphuxfbzpxbgry.jpg", 2, "indoor apse"],
    ]
    val = [["a/abbey/sun_aajpiquqnjtzetxf.jpg", 0, "abbey"]]
    test = [["b/balcony/exterior/sun_abtkdwdnykbofvkb.jpg", 1, "exterior balcony"]]
    _split_json(root, "sun397", "SUN397", "split_zhou_SUN397.json", {"train": train, "val": val, "test": test})
    return Expected("sun397", ("abbey", "exterior balcony", "indoor apse"), (3, 1, 1))


def make_dtd(root: Path) -> Expected:
    train = [["banded/banded_0002.jpg", 0, "banded"], ["blotchy/blotchy_0003.jpg", 1, "blotchy"]]
    val = [["banded/banded_0004.jpg", 0, "banded"]]
    test = [["blotchy/blotchy_0010.jpg", 1, "blotchy"]]
    _split_json(
        root, "dtd", "images", "split_zhou_DescribableTextures.json", {"train": train, "val": val, "test": test}
    )
    return Expected("dtd", ("banded", "blotchy"), (2, 1, 1))


def make_eurosat(root: Path) -> Expected:
    # Mixed on purpose: raw folder names (renamed on read) and CoOp's new names (left as they are).
    train = [
        ["AnnualCrop/AnnualCrop_1.jpg", 0, "AnnualCrop"],
        ["Forest/Forest_1.jpg", 1, "Forest"],
        ["HerbaceousVegetation/HerbaceousVegetation_1.jpg", 2, "Herbaceous Vegetation Land"],
        ["SeaLake/SeaLake_1.jpg", 3, "SeaLake"],
    ]
    val = [["SeaLake/SeaLake_2.jpg", 3, "Sea or Lake"]]
    test = [["AnnualCrop/AnnualCrop_2.jpg", 0, "Annual Crop Land"]]
    _split_json(root, "eurosat", "2750", "split_zhou_EuroSAT.json", {"train": train, "val": val, "test": test})
    return Expected("eurosat", ("Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Sea or Lake"), (4, 1, 1))


def make_ucf101(root: Path) -> Expected:
    train = [
        ["Apply_Eye_Makeup/v_ApplyEyeMakeup_g08_c01.jpg", 0, "Apply_Eye_Makeup"],
        ["Baby_Crawling/v_BabyCrawling_g09_c02.jpg", 1, "Baby_Crawling"],
        ["Yo_Yo/v_YoYo_g10_c01.jpg", 2, "Yo_Yo"],
    ]
    val = [["Yo_Yo/v_YoYo_g11_c03.jpg", 2, "Yo_Yo"]]
    test = [["Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg", 0, "Apply_Eye_Makeup"]]
    _split_json(
        root, "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", {"train": train, "val": val, "test": test}
    )
    return Expected("ucf101", ("Apply_Eye_Makeup", "Baby_Crawling", "Yo_Yo"), (3, 1, 1))


IMAGENET_NAMES = (
    "n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\nn01491361 tiger shark\n"
    "n01498041 stingray\nn01531178 goldfinch\n"
)


def make_imagenet(root: Path) -> Expected:
    folder = root / "imagenet"
    folder.mkdir(parents=True)
    (folder / "classnames.txt").write_text(IMAGENET_NAMES)
    # Three of the listed classes are present; labels index the sorted wnid folders.
    for wnid, count in (("n01484850", 3), ("n01440764", 2), ("n01443537", 1)):
        for index in range(count):
            write_image(folder / "images/train" / wnid / f"{wnid}_{10026 + index}.JPEG", index)
        write_image(folder / "images/val" / wnid / f"ILSVRC2012_val_000{wnid[-5:]}.JPEG")
    (folder / "images/train/n01440764/.DS_Store").write_text("hidden files are not images")
    return Expected(
        "imagenet",
        ("tench", "goldfish", "great white shark"),
        (6, 3, 3),
        {"train": [0, 0, 1, 2, 2, 2], "test": [0, 1, 2]},
        val_is_test=True,
    )


def make_imagenet_v2(root: Path) -> Expected:
    folder = root / "imagenetv2"
    names = "n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n"
    (folder / "imagenetv2-matched-frequency-format-val").mkdir(parents=True)
    (folder / "classnames.txt").write_text(names)
    for label, count in ((0, 1), (1, 2), (2, 1)):
        for index in range(count):
            write_image(folder / "imagenetv2-matched-frequency-format-val" / str(label) / f"{7 + index}a.jpeg", index)
    return Expected("imagenet_v2", ("tench", "goldfish", "great white shark"), (0, 0, 4), {"test": [0, 1, 1, 2]})


def make_imagenet_sketch(root: Path) -> Expected:
    # No classnames.txt of its own: the one in imagenet/ is used (built by make_imagenet).
    for wnid in ("n01443537", "n01440764"):
        write_image(root / "imagenet-sketch/images" / wnid / "sketch_1.JPEG")
    return Expected("imagenet_sketch", ("tench", "goldfish"), (0, 0, 2), {"test": [0, 1]})


def _make_200_way(root: Path, dataset_dir: str, image_dir: str, name: str) -> Expected:
    folder = root / dataset_dir
    (folder / image_dir).mkdir(parents=True)
    (folder / "classnames.txt").write_text(IMAGENET_NAMES)
    (folder / image_dir / "README.txt").write_text("not a class")
    for wnid in ("n01531178", "n01498041"):
        write_image(folder / image_dir / wnid / "0.000116_digital clock _ digital clock_0.865662.jpg")
    write_image(folder / image_dir / "n01531178" / "art_0.jpg")
    return Expected(name, ("stingray", "goldfinch"), (0, 0, 3), {"test": [0, 1, 1]})


def make_imagenet_a(root: Path) -> Expected:
    return _make_200_way(root, "imagenet-adversarial", "imagenet-a", "imagenet_a")


def make_imagenet_r(root: Path) -> Expected:
    return _make_200_way(root, "imagenet-rendition", "imagenet-r", "imagenet_r")


BENCHMARK_BUILDERS = (
    make_imagenet,  # first: imagenet_sketch reuses its classnames.txt
    make_caltech101,
    make_oxford_pets,
    make_stanford_cars,
    make_oxford_flowers,
    make_food101,
    make_fgvc_aircraft,
    make_sun397,
    make_dtd,
    make_eurosat,
    make_ucf101,
    make_imagenet_v2,
    make_imagenet_sketch,
    make_imagenet_a,
    make_imagenet_r,
)


def build_benchmarks(root: Path) -> dict[str, Expected]:
    """Every benchmark replica under one data root, keyed by canonical dataset name."""
    root.mkdir(parents=True, exist_ok=True)
    expected = [builder(root) for builder in BENCHMARK_BUILDERS]
    return {item.name: item for item in expected}
