"""Run integrity: one input changed into the same output folder is either right or refused, never a stale result.

Each test is one example of a fault class: same folder with other data or another config, a finished run re-run,
a concurrent writer, a corrupt run file, a typed option, a small dataset, a custom dataset that would lose data.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from calprompt.cli import app
from calprompt.experiments.config import RunConfig
from calprompt.experiments.runner import evaluate_run, run_experiment

# Names of the new API are imported inside the tests, so that on a calprompt without them each test still fails
# for its own reason (the behaviour), not at import.
LOCK_FILE = ".lock"
SHAPES = ("circle", "square", "triangle", "cross", "star", "ring")


@pytest.fixture(scope="module")
def backbone(toy_weights):
    from calprompt.clip import load_clip

    return load_clip("toy", toy_weights)


@pytest.fixture(scope="module")
def base_config(toy_weights):
    return RunConfig(shots=1, epochs=1, warmup_epochs=0, batch_size=8, pretrained=toy_weights)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, backbone, base_config, shared_cache):
    """One finished toy run, shared read-only by the refusal tests (a refusal writes nothing)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run_experiment(base_config, out, backbone=backbone, cache_dir=shared_cache)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")


def image_folder(root: Path, classes: tuple[str, ...], *, train: int = 2, val: int = 1, test: int = 3) -> Path:
    for label, name in enumerate(classes):
        for split, count in (("train", train), ("val", val), ("test", test)):
            if count:
                write_images(root / split / name, count, seed=label * 10 + len(split))
    return root


def six_classes() -> tuple[str, ...]:
    return tuple(f"red_{shape}" for shape in SHAPES)


# ---------------------------------------------------------------------------------------------------------------
# Same folder, other data or other config


@pytest.mark.parametrize(
    "change",
    [
        {"dataset": "toy-texture"},  # same layout, other data: used to "resume" and report toy's prompts
        {"seed": 5},  # used to overwrite config.json, leaving seed-5 config with seed-1 prompts
        {"epochs": 0},  # used to replace the trained prompts by the initial ones
        {"method_options": {"n_ctx": 8}},
        {"calibration": "none"},
        {"lr": 0.5},
        {"pretrained": None},  # other backbone weights (the shipped toy checkpoint)
    ],
    ids=lambda change: next(iter(change)),
)
def test_another_identity_is_refused_before_anything_is_written(trained, backbone, base_config, shared_cache, change):
    before = snapshot(trained)
    with pytest.raises(ValueError, match="holds another run") as info:
        run_experiment(dataclasses.replace(base_config, **change), trained, backbone=backbone, cache_dir=shared_cache)
    assert next(iter(change)) in str(info.value) or "weights" in str(info.value)
    assert snapshot(trained) == before


def test_a_folder_of_no_run_is_refused(tmp_path, backbone, base_config, shared_cache):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no calprompt run identity"):
        run_experiment(base_config, tmp_path, backbone=backbone, cache_dir=shared_cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_leftovers_of_a_killed_first_write_do_not_block_the_restart(tmp_path, backbone, toy_weights, shared_cache):
    """Found by the fault injection: a kill while identity.json was written left only its temporary file."""
    root = image_folder(tmp_path / "data", six_classes())
    config = _folder_config(root, toy_weights)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).touch()
    (out / ".identity.json.k1ll3d.tmp").write_text('{"run_id": ')
    run_experiment(config, out, backbone=backbone, cache_dir=shared_cache)
    assert (out / "finished.json").is_file()


def test_rerunning_a_finished_run_keeps_it_and_its_evaluations(tmp_path, backbone, base_config, shared_cache):
    out = tmp_path / "run"
    first = run_experiment(base_config, out, backbone=backbone, cache_dir=shared_cache).metrics
    targets = [image_folder(tmp_path / name, six_classes(), train=0, val=0) for name in ("a", "b")]
    for target in targets:  # the same dataset name under two roots: two entries
        evaluate_run(out, dataset="folder", root=str(target), backbone=backbone, cache_dir=shared_cache)
    before = snapshot(out)
    again = run_experiment(base_config, out, backbone=backbone, cache_dir=shared_cache).metrics
    assert snapshot(out) == before  # nothing rewritten
    assert {key for key in again if key.startswith("eval:")} == {f"eval:folder@{target}" for target in targets}
    assert {key: value for key, value in again.items() if not key.startswith("eval:")} == first

    forced = run_experiment(base_config, out, backbone=backbone, cache_dir=shared_cache, force=True).metrics
    assert not any(key.startswith("eval:") for key in forced)  # evaluations of replaced prompts go with them
    assert forced["base"] == first["base"]  # the same run, recomputed


def test_evaluation_refuses_a_run_whose_data_changed(tmp_path, backbone, toy_weights, shared_cache):
    root = image_folder(tmp_path / "data", six_classes())
    config = _folder_config(root, toy_weights)
    out = tmp_path / "run"
    run_experiment(config, out, backbone=backbone, cache_dir=shared_cache)
    write_images(root / "test" / "red_star", 3, seed=99)  # replaced in place: other pixels, same names
    with pytest.raises(ValueError, match="data"):
        evaluate_run(out, backbone=backbone, cache_dir=shared_cache)
    with pytest.raises(ValueError, match="data"):  # the grid/store sees the same
        run_experiment(config, out, backbone=backbone, cache_dir=shared_cache)


def test_a_changed_transfer_target_is_never_served_from_a_finished_run(tmp_path, backbone, toy_weights, shared_cache):
    """A run stores its transfer targets' results, so their test images are part of its identity: after a target
    image changes, neither the run nor the store hands back the old numbers (and both agree before)."""
    from calprompt.experiments.store import ResultsStore

    root = image_folder(tmp_path / "data", six_classes(), train=0, val=0)
    config = RunConfig(
        shots=1,
        epochs=1,
        warmup_epochs=0,
        batch_size=8,
        pretrained=toy_weights,
        root=str(root),
        eval_datasets=("folder",),
    )
    store = ResultsStore(tmp_path / "store")
    metrics = store.run(config, backbone=backbone, cache_dir=shared_cache).metrics
    assert "eval:folder" in metrics
    assert metrics["eval:folder"]["piece"] is not None  # targets measured against the run's validation images too
    assert ResultsStore(store.root).finished(config) == metrics  # the store's identity is the run's
    write_images(root / "test" / "red_ring", 3, seed=77)  # replaced in place: other pixels, same names
    assert ResultsStore(store.root).finished(config) is None
    with pytest.raises(ValueError, match="transfer target"):
        run_experiment(config, store.run_dir(config), backbone=backbone, cache_dir=shared_cache)


def test_the_store_reuses_only_the_same_identity(tmp_path, backbone, toy_weights, shared_cache):
    from calprompt.experiments.store import ResultsStore

    root = image_folder(tmp_path / "data", six_classes())
    config = _folder_config(root, toy_weights)
    store = ResultsStore(tmp_path / "store")
    assert store.finished(config) is None
    metrics = store.run(config, backbone=backbone, cache_dir=shared_cache).metrics
    assert store.finished(config) == metrics
    assert [run.path for run in store.iter_runs()] == [store.run_dir(config)]
    assert store.run_dir(dataclasses.replace(config, seed=2)) != store.run_dir(config)
    os.utime(root / "train" / "red_cross" / "0.png", ns=(1, 1))  # the file changed
    assert ResultsStore(store.root).finished(config) is None


def test_relative_root_is_stored_absolute_and_eval_works_from_elsewhere(tmp_path, monkeypatch, toy_weights, cache_env):
    image_folder(tmp_path / "data", six_classes())
    monkeypatch.chdir(tmp_path)
    args = [
        "train",
        "-d",
        "folder",
        "--backbone",
        "toy",
        "--root",
        "data",
        "--shots",
        "2",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "4",
    ]
    result = CliRunner().invoke(app, [*args, "--pretrained", toy_weights, "--quiet", "--out", "run"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["root"] == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------------------------------------------
# One writer per run directory


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path, backbone, base_config, shared_cache):
    from calprompt.experiments.rundir import RunDirectoryBusyError, run_lock

    out = tmp_path / "run"
    with run_lock(out), pytest.raises(RunDirectoryBusyError, match=f"pid {os.getpid()}"):
        run_experiment(base_config, out, backbone=backbone, cache_dir=shared_cache)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing was written
    run_experiment(base_config, out, backbone=backbone, cache_dir=shared_cache)  # the lock died with its holder


def test_a_concurrent_cli_writer_exits_1_with_the_reason(tmp_path, toy_weights, cache_env):
    out = tmp_path / "run"
    out.mkdir()
    with (out / LOCK_FILE).open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # another process "is training" into out
        command = [sys.executable, "-m", "calprompt.cli", "train", "--pretrained", toy_weights, "--shots", "1"]
        command += ["--epochs", "1", "--warmup-epochs", "0", "--quiet", "--out", str(out)]
        result = subprocess.run(command, env=cache_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Another calprompt process" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Corrupt run files: named, with the fix, one line, exit code 1


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("prompt.safetensors", lambda path: path.write_bytes(path.read_bytes()[:20])),
        ("metrics.json", lambda path: path.write_text("{not json")),
        ("finished.json", lambda path: path.write_text("")),
        ("identity.json", lambda path: path.write_text("[]")),
    ],
)
def test_a_corrupt_run_file_is_named(tmp_path, trained, name, damage, cache_env):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(trained), str(out)], check=True)
    damage(out / name)
    result = CliRunner().invoke(app, ["eval", "--run", str(out)])
    assert result.exit_code == 1
    assert str(out / name) in result.output and "Traceback" not in result.output


def test_a_corrupt_checkpoint_is_named(tmp_path, backbone, base_config, shared_cache):
    out = tmp_path / "run"
    config = dataclasses.replace(base_config, epochs=2)
    run_experiment(config, out, backbone=backbone, cache_dir=shared_cache)
    (out / "finished.json").unlink()  # as if killed after the last checkpoint
    (out / "checkpoint" / "checkpoint.json").write_text('{"epoch": ')
    with pytest.raises(ValueError, match=r"checkpoint\.json"):
        run_experiment(config, out, backbone=backbone, cache_dir=shared_cache)


def test_a_zero_byte_feature_cache_entry_is_recomputed_with_a_warning(tmp_path, backbone, toy_weights):
    root = image_folder(tmp_path / "data", six_classes())
    config = _folder_config(root, toy_weights)
    cache = tmp_path / "cache"
    first = run_experiment(config, tmp_path / "a", backbone=backbone, cache_dir=cache).metrics
    entries = sorted((cache / "features").rglob("*.npy"))
    entries[0].write_bytes(b"")
    with pytest.warns(UserWarning, match=re.escape(str(entries[0]))):
        again = run_experiment(config, tmp_path / "b", backbone=backbone, cache_dir=cache).metrics
    assert again["base"] == first["base"] and again["novel"] == first["novel"]


# ---------------------------------------------------------------------------------------------------------------
# Typed options and settings


def test_a_false_boolean_option_is_false(tmp_path, toy_weights, cache_env):
    args = [
        "train",
        "--pretrained",
        toy_weights,
        "--shots",
        "1",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "8",
        "--quiet",
    ]
    option = ["--method-option", "class_specific_context=False"]
    result = CliRunner().invoke(app, [*args, *option, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert load_file(str(tmp_path / "run" / "prompt.safetensors"))["ctx"].shape == (4, 64)  # shared, not per class
    result = CliRunner().invoke(app, [*args, "--method-option", "class_specific_context=maybe", "--out", "x"])
    assert result.exit_code == 1 and "class_specific_context" in result.output and "boolean" in result.output


@pytest.mark.parametrize("flag", ["--lr", "--calibration-option"])
def test_a_non_finite_number_is_refused_naming_the_setting(tmp_path, toy_weights, flag):
    value = "nan" if flag == "--lr" else "lambda_mm=inf"
    result = CliRunner().invoke(app, ["train", "--pretrained", toy_weights, flag, value, "--out", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ("`lr`" if flag == "--lr" else "lambda_mm") in result.output and "finite" in result.output
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------------
# Small datasets and custom datasets


def test_six_classes_train_and_evaluate_with_dac_on_three_base_classes(tmp_path, backbone, toy_weights, shared_cache):
    root = image_folder(tmp_path / "data", six_classes())
    config = _folder_config(root, toy_weights)
    metrics = run_experiment(config, tmp_path / "run", backbone=backbone, cache_dir=shared_cache).metrics
    assert metrics["base"]["n_classes"] == 3 and metrics["novel"]["n_classes"] == 3
    assert metrics["novel+dac"]["n"] == 9
    assert "lowered from 5 to the 3 base classes" in metrics["skipped"]["dac_k"]


def test_no_validation_split_records_that_temperature_scaling_was_skipped(
    tmp_path, backbone, toy_weights, shared_cache
):
    root = image_folder(tmp_path / "data", six_classes(), val=0)
    config = _folder_config(root, toy_weights)
    metrics = run_experiment(config, tmp_path / "run", backbone=backbone, cache_dir=shared_cache).metrics
    assert "base+ts" not in metrics and "validation" in metrics["skipped"]["ts"]


def _folder_config(root: Path, toy_weights: str) -> RunConfig:
    """One epoch of CoOp on a folder dataset at ``root`` (the data the integrity checks edit)."""
    return RunConfig(
        dataset="folder",
        backbone="toy",
        root=str(root),
        shots=2,
        epochs=1,
        warmup_epochs=0,
        batch_size=4,
        pretrained=toy_weights,
    )


def _check(root: Path, name: str = "folder"):
    return CliRunner().invoke(app, ["datasets", "check", "--root", str(root), name])


def _train(root: Path, out: Path, toy_weights: str, name: str = "folder"):
    args = [
        "train",
        "-d",
        name,
        "--backbone",
        "toy",
        "--root",
        str(root),
        "--shots",
        "2",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "4",
    ]
    return CliRunner().invoke(app, [*args, "--pretrained", toy_weights, "--quiet", "--out", str(out)])


def test_a_class_only_in_test_is_reported_by_check_and_refused_by_training(tmp_path, toy_weights, cache_env):
    root = image_folder(tmp_path / "data", six_classes())
    write_images(root / "test" / "blue_star", 3, seed=5)
    checked = _check(root)
    assert checked.exit_code == 1 and "BAD CLASSES" in checked.output and "blue_star" in checked.output
    trained = _train(root, tmp_path / "run", toy_weights)
    assert trained.exit_code == 1 and "blue_star" in trained.output and "no training items" in trained.output
    assert not (tmp_path / "run" / "identity.json").exists()


def test_a_csv_class_name_typo_is_reported_and_refused(tmp_path, toy_weights, cache_env):
    root = image_folder(tmp_path / "images", six_classes())
    for split in ("train", "val", "test"):
        rows = [f"{path},{path.parent.name}" for path in sorted((root / split).rglob("*.png"))]
        if split == "test":
            rows[0] = rows[0].rsplit(",", 1)[0] + ",red_cirlce"  # a typo
        (tmp_path / f"{split}.csv").write_text("path,classname\n" + "\n".join(rows) + "\n")
    checked = _check(tmp_path, "csv")
    assert checked.exit_code == 1 and "red_cirlce" in checked.output
    trained = _train(tmp_path, tmp_path / "run", toy_weights, "csv")
    assert trained.exit_code == 1 and "red_cirlce" in trained.output


def test_broken_symlinks_and_other_files_are_reported_with_counts(tmp_path, toy_weights, cache_env):
    root = image_folder(tmp_path / "data", six_classes())
    (root / "train" / "red_star" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "train" / "red_star" / "notes.txt").write_text("x")
    (root / "test" / "red_ring" / "scan.pdf").write_text("x")
    checked = _check(root)
    assert checked.exit_code == 1 and "BAD IMAGES" in checked.output
    assert "gone.png" in checked.output and "2 skipped file(s)" in checked.output and "scan.pdf" in checked.output
    trained = _train(root, tmp_path / "run", toy_weights)
    assert trained.exit_code == 1 and "gone.png" in trained.output and "Traceback" not in trained.output
