"""Bad input: each case raises one clear error naming the offending path or value and the fix; skips are opt-in."""

from __future__ import annotations

import json
import logging
import re

import pytest

from calprompt.data import ItemDataset, build_test_transform, get_dataset_spec, load_dataset, open_rgb_image
from tests.data.replicas import (
    make_fgvc_aircraft,
    make_imagenet,
    make_imagenet_a,
    make_imagenet_v2,
    make_oxford_pets,
    write_image,
)


def test_unknown_dataset_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"got 'oxford_petz'\. Did you mean 'oxford_pets'") as info:
        load_dataset("oxford_petz", "/tmp")
    assert "oxford_pets" in str(info.value) and "imagenet_r" in str(info.value)


def test_missing_root(tmp_path):
    root = tmp_path / "no_such_root"
    with pytest.raises(FileNotFoundError, match="Data root not found") as info:
        load_dataset("dtd", root)
    assert str(root) in str(info.value)
    assert "DATASETS.md#dtd" in str(info.value)


def test_root_required_for_datasets_with_files():
    with pytest.raises(ValueError, match=r"Expected `root`.*oxford_pets"):
        load_dataset("oxford_pets")


def test_missing_dataset_folder_names_every_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("oxford_pets", tmp_path)
    message = str(info.value)
    assert f"missing: {tmp_path / 'oxford_pets' / 'images'}/" in message
    assert str(tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json") in message
    assert "drive.google.com" in message  # CoOp's download link for the split file


def test_missing_split_file(tmp_path):
    make_oxford_pets(tmp_path)
    split = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    split.unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("oxford_pets", tmp_path)
    assert f"missing: {split} (CoOp split file)" in str(info.value)


def test_missing_image_is_named_unless_skipping_is_asked_for(tmp_path, caplog):
    make_oxford_pets(tmp_path)
    lost = tmp_path / "oxford_pets" / "images" / "american_bulldog_10.jpg"
    lost.unlink()
    with pytest.raises(FileNotFoundError, match="Image file not found") as info:
        load_dataset("oxford_pets", tmp_path)
    assert str(lost) in str(info.value) and "skip_missing=True" in str(info.value)

    with caplog.at_level(logging.WARNING, logger="calprompt.data"):
        splits = load_dataset("oxford_pets", tmp_path, skip_missing=True)
    assert splits.missing_files == (str(lost),)
    assert len(splits.train) == 3 and str(lost) not in {item.impath for item in splits.train}
    assert "Skipped 1 listed image file(s)" in caplog.text


def test_corrupt_image_is_named_when_read(tmp_path):
    make_oxford_pets(tmp_path)
    bad = tmp_path / "oxford_pets" / "images" / "Abyssinian_1.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a complete JPEG")
    splits = load_dataset("oxford_pets", tmp_path)
    with pytest.raises(OSError, match="unreadable or corrupt") as info:
        splits.image_loader(splits.train[0].impath)
    assert str(bad) in str(info.value)
    dataset = ItemDataset(splits.train, build_test_transform())
    with pytest.raises(OSError, match=re.escape(str(bad))):
        dataset[0]


def test_open_rgb_image_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gone.jpg"))):
        open_rgb_image(str(tmp_path / "gone.jpg"))


@pytest.mark.parametrize(
    ("content", "offending"),
    [
        ("[1, 2, 3]", "'list'"),
        ('{"train": [], "val": []}', "['train', 'val']"),
        ('{"train": [["a.jpg", 0]], "val": [], "test": []}', "train[0] is ['a.jpg', 0]"),
        ('{"train": [["a.jpg", "0", "cat"]], "val": [], "test": []}', "train[0] is ['a.jpg', '0', 'cat']"),
        ('{"train": [], "val": [], "test": [["a.jpg", -1, "cat"]]}', "test[0] is ['a.jpg', -1, 'cat']"),
        ('{"train": [["a.jpg", true, "cat"]], "val": [], "test": []}', "train[0] is ['a.jpg', True, 'cat']"),
        ('{"train": [', "not valid JSON"),
    ],
)
def test_wrong_shaped_split_json_names_file_and_entry(tmp_path, content, offending):
    make_oxford_pets(tmp_path)
    split = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    split.write_text(content)
    with pytest.raises(ValueError) as info:
        load_dataset("oxford_pets", tmp_path)
    assert str(split) in str(info.value)
    assert offending in str(info.value)


def test_split_json_with_label_gap_or_two_names_per_label(tmp_path):
    make_oxford_pets(tmp_path)
    split = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    entries = json.loads(split.read_text())
    gap = {**entries, "train": [["Abyssinian_1.jpg", 0, "abyssinian"], ["Abyssinian_2.jpg", 2, "yorkshire_terrier"]]}
    gap["val"], gap["test"] = [], []
    split.write_text(json.dumps(gap))
    with pytest.raises(ValueError, match=r"no item has label\(s\) \[1\]"):
        load_dataset("oxford_pets", tmp_path)
    clash = {"train": [["Abyssinian_1.jpg", 0, "abyssinian"], ["Abyssinian_2.jpg", 0, "bengal"]], "val": [], "test": []}
    split.write_text(json.dumps(clash))
    with pytest.raises(ValueError, match="label 0 is called both 'abyssinian' and 'bengal'") as info:
        load_dataset("oxford_pets", tmp_path)
    assert str(split) in str(info.value)


def test_imagenet_flat_val_folder_is_explained(tmp_path):
    make_imagenet(tmp_path)
    val = tmp_path / "imagenet" / "images" / "val"
    for wnid_dir in list(val.iterdir()):
        for image in wnid_dir.iterdir():
            image.rename(val / image.name)
        wnid_dir.rmdir()
    with pytest.raises(ValueError, match="has no class sub-folders") as info:
        load_dataset("imagenet", tmp_path)
    assert str(val) in str(info.value) and "wnid" in str(info.value)


def test_imagenet_folder_missing_from_classnames(tmp_path):
    make_imagenet(tmp_path)
    names = tmp_path / "imagenet" / "classnames.txt"
    names.write_text("n01440764 tench\nn01443537 goldfish\n")
    with pytest.raises(ValueError, match="n01484850 is not listed in") as info:
        load_dataset("imagenet", tmp_path)
    assert str(names) in str(info.value)


def test_malformed_classnames_line(tmp_path):
    make_imagenet_a(tmp_path)
    names = tmp_path / "imagenet-adversarial" / "classnames.txt"
    names.write_text("n01498041 stingray\nn01531178\n")
    with pytest.raises(ValueError, match="line 2") as info:
        load_dataset("imagenet_a", tmp_path)
    assert str(names) in str(info.value)


def test_imagenet_v2_missing_index_folder(tmp_path):
    make_imagenet_v2(tmp_path)
    folder = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / "1"
    for image in folder.iterdir():
        image.unlink()
    folder.rmdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"Class folder not found: {folder}")):
        load_dataset("imagenet_v2", tmp_path)


def test_aircraft_unknown_variant_names_file_and_line(tmp_path):
    make_fgvc_aircraft(tmp_path)
    listing = tmp_path / "fgvc_aircraft" / "images_variant_val.txt"
    listing.write_text("0064145 Falcon 9000\n")
    with pytest.raises(ValueError, match="line 1: variant 'Falcon 9000'") as info:
        load_dataset("fgvc_aircraft", tmp_path)
    assert str(listing) in str(info.value)


def test_csv_errors_name_file_and_line(tmp_path):
    (tmp_path / "test.csv").write_text("file,target\na.png,0\n")
    with pytest.raises(ValueError, match="expected a header row") as info:
        load_dataset("csv", tmp_path)
    assert str(tmp_path / "test.csv") in str(info.value)
    (tmp_path / "test.csv").write_text("path,label\na.png,zero\n")
    with pytest.raises(ValueError, match="line 2: expected `label` to be an integer >= 0, got 'zero'"):
        load_dataset("csv", tmp_path)
    (tmp_path / "test.csv").write_text("path,label\na.png,0\n")
    with pytest.raises(FileNotFoundError, match=re.escape(f"Class-name file not found: {tmp_path / 'classnames.txt'}")):
        load_dataset("csv", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"at least one of train\.csv"):
        load_dataset("csv", empty)


def test_empty_image_folder(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path} has no class sub-folders")):
        load_dataset("folder", tmp_path)


def test_every_benchmark_explains_how_to_get_it():
    for name in ("imagenet", "caltech101", "fgvc_aircraft", "imagenet_v2", "imagenet_r"):
        spec = get_dataset_spec(name)
        assert "github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md#" in spec.download


def test_csv_as_spreadsheets_write_it_is_read(tmp_path):
    """A byte-order mark and CRLF line ends (Excel's "CSV UTF-8"), in the CSVs and in classnames.txt."""
    for index in range(4):
        write_image(tmp_path / f"{index}.png", index)
    (tmp_path / "classnames.txt").write_bytes("\ufeffred car\r\nblue bike\r\n".encode())
    (tmp_path / "train.csv").write_bytes("\ufeffpath,label\r\n0.png,1\r\n1.png,0\r\n".encode())
    (tmp_path / "test.csv").write_bytes("\ufeffpath,classname\r\n2.png,red car\r\n3.png,blue bike\r\n".encode())
    splits = load_dataset("csv", tmp_path)
    assert splits.classnames == ("red car", "blue bike")
    assert [(item.label, item.classname) for item in splits.train] == [(1, "blue bike"), (0, "red car")]
    assert [item.label for item in splits.test] == [0, 1]


def test_csv_label_that_only_looks_like_a_digit_names_file_and_line(tmp_path):
    write_image(tmp_path / "0.png")
    (tmp_path / "classnames.txt").write_text("a\nb\n")
    (tmp_path / "test.csv").write_text("path,label\n0.png,0\n0.png,\u00b2\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_dataset("csv", tmp_path)
    assert str(info.value) == f"{tmp_path / 'test.csv'}, line 3: expected `label` to be an integer >= 0, got '\u00b2'."


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_training_data_without_test_data_is_refused_when_read(tmp_path, kind):
    if kind == "folder":
        write_image(tmp_path / "train" / "cat" / "0.png")
        write_image(tmp_path / "train" / "dog" / "0.png")
    else:
        write_image(tmp_path / "0.png")
        (tmp_path / "train.csv").write_text("path,classname\n0.png,cat\n0.png,dog\n")
    with pytest.raises(ValueError, match="evaluated on the test split") as info:
        load_dataset(kind, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: train") and (
        "test/" in message if kind == "folder" else "test.csv" in message
    )
