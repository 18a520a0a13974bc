"""`calprompt datasets check` and `list`, driven through typer's CliRunner on an app that mounts the sub-app."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from calprompt.cli.datasets import datasets_app
from tests.data.replicas import make_dtd, make_oxford_pets

app = typer.Typer()
app.add_typer(datasets_app, name="datasets")


@pytest.fixture
def runner():
    return CliRunner()


def test_check_reports_counts_for_complete_datasets(runner, replica_root):
    root, _ = replica_root
    result = runner.invoke(app, ["datasets", "check", "--root", str(root), "oxford_pets", "ImageNet", "fgvc_aircraft"])
    assert result.exit_code == 0, result.output
    assert "oxford_pets (OxfordPets) under" in result.output
    assert f"found: {root / 'oxford_pets' / 'split_zhou_OxfordPets.json'}" in result.output
    # Per-split counts appear in the table row of each dataset.
    row = next(line for line in result.output.splitlines() if "│ oxford_pets" in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["oxford_pets", "OK", "4", "1", "2", "3"]
    imagenet = next(line for line in result.output.splitlines() if "│ imagenet" in line)
    assert [cell.strip() for cell in imagenet.split("│")[1:-1]] == ["imagenet", "OK", "6", "= test", "3", "3"]
    # The replicas are far smaller than the published splits, which the check points out.
    assert "published train/val/test sizes are 2,944/736/3,669 with 37 classes" in result.output


def test_check_names_missing_paths_and_how_to_get_them(runner, tmp_path):
    make_dtd(tmp_path)
    result = runner.invoke(app, ["datasets", "check", "--root", str(tmp_path), "dtd", "oxford_pets", "imagenet_r"])
    assert result.exit_code == 1
    assert "dtd (DTD) under" in result.output and ": OK" in result.output
    assert f"missing: {tmp_path / 'oxford_pets' / 'images'}/ (image folder)" in result.output
    assert f"missing: {tmp_path / 'oxford_pets' / 'split_zhou_OxfordPets.json'} (CoOp split file)" in result.output
    assert "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md#oxfordpets" in result.output
    assert f"missing: {tmp_path / 'imagenet-rendition' / 'imagenet-r'}/" in result.output


def test_check_counts_missing_and_unreadable_images(runner, tmp_path):
    make_oxford_pets(tmp_path)
    (tmp_path / "oxford_pets/images/Abyssinian_2.jpg").unlink()
    (tmp_path / "oxford_pets/images/Abyssinian_100.jpg").write_bytes(b"not an image")
    result = runner.invoke(app, ["datasets", "check", "--root", str(tmp_path), "oxford_pets", "--verify-images"])
    assert result.exit_code == 1
    assert "1 missing image(s)" in result.output
    assert str(tmp_path / "oxford_pets/images/Abyssinian_2.jpg") in result.output
    assert "1 unreadable image(s)" in result.output
    assert str(tmp_path / "oxford_pets/images/Abyssinian_100.jpg") in result.output


def test_check_without_names_covers_every_benchmark(runner, tmp_path):
    result = runner.invoke(app, ["datasets", "check", "--root", str(tmp_path / "absent")])
    assert result.exit_code == 1
    for name in ("imagenet", "caltech101", "sun397", "ucf101", "imagenet_v2", "imagenet_sketch"):
        assert f"{name} (" in result.output
    assert "folder (" not in result.output
    assert f"the data root {tmp_path / 'absent'} does not exist" in result.output


def test_check_rejects_unknown_names(runner, tmp_path):
    result = runner.invoke(app, ["datasets", "check", "--root", str(tmp_path), "imagenet_q"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "Expected `dataset` to be one of" in result.output
    assert "got 'imagenet_q'. Did you mean 'imagenet" in result.output


def test_list_shows_names_aliases_and_templates(runner):
    result = runner.invoke(app, ["datasets", "list"])
    assert result.exit_code == 0
    assert "dtd (also: DescribableTextures, textures): DTD, train/val/test, template '{} texture.'" in result.output
    assert "imagenet_a" in result.output and "test only" in result.output
