"""Every user error through the command line is one line naming the setting or file and the fix, with exit code 1
(issue 21: none of these may say "Internal error" or print a traceback)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from calprompt.cli import app


def one_line_error(args: list[str]) -> str:
    """Run the CLI with ``args``; check it failed as a user error (exit 1, one line, no traceback); return the line."""
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.output
    assert "Internal error" not in result.output and "Traceback" not in result.output
    return lines[0]


def test_report_on_a_missing_store_is_one_line(tmp_path):
    line = one_line_error(["report", str(tmp_path / "nowhere")])
    assert str(tmp_path / "nowhere") in line and "results store" in line


def test_train_without_out_is_one_line():
    line = one_line_error(["train", "--dataset", "toy", "--epochs", "1", "--warmup-epochs", "0"])
    assert "`--out`" in line and "--dry-run" in line


@pytest.mark.parametrize("option", ["n_ctx", "=4", "n_ctx=four"])
def test_malformed_method_option_is_one_line(option, tmp_path):
    line = one_line_error(["train", "--dataset", "toy", "--method-option", option, "--out", str(tmp_path / "x")])
    assert "--method-option" in line or "n_ctx" in line
    assert not (tmp_path / "x").exists()


def test_datasets_check_unknown_name_is_one_line_with_a_suggestion(tmp_path):
    line = one_line_error(["datasets", "check", "--root", str(tmp_path), "oxford_petz"])
    assert "`dataset`" in line and "Did you mean 'oxford_pets'?" in line


def test_predict_classes_with_classes_file_is_one_line(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    args = ["predict", str(tmp_path), "--run", str(tmp_path), "--classes", "a,b", "--classes-file", str(names)]
    line = one_line_error(args)
    assert "--classes" in line and "--classes-file" in line


@pytest.mark.parametrize(
    ("option", "given", "meant"),
    [
        ("--method", "coopp", "coop"),
        ("--calibration", "ourz", "ours"),
        ("--dataset", "oxford_petz", "oxford_pets"),
        ("--protocol", "base2nvel", "base2novel"),
    ],
)
def test_misspelt_names_get_did_you_mean(option, given, meant):
    line = one_line_error(["train", option, given, "--dry-run"])
    assert f"got {given!r}" in line and line.endswith(f"Did you mean {meant!r}?")


def test_folder_with_only_train_is_refused_before_training(toy_weights, tmp_path, cache_env):
    from tests.data.replicas import write_image

    for index, classname in enumerate(("cat", "dog", "eel", "fox")):
        write_image(tmp_path / "data" / "train" / classname / "0.png", index)
    args = [
        "train",
        "--dataset",
        "folder",
        "--root",
        str(tmp_path / "data"),
        "--backbone",
        "toy",
        "--pretrained",
        toy_weights,
    ]
    args += [
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "4",
        "--lr",
        "0.002",
        "--shots",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    line = one_line_error(args)
    assert str(tmp_path / "data") in line and "no test/" in line and "Add test images" in line
    assert not (tmp_path / "run").exists()  # refused before anything was written, so not after training


def _zero_shot_sweep(tmp_path, weights: str):
    import yaml

    sections = {
        "name": "zs",
        "base": {"pretrained": weights, "method": "zeroshot", "calibration": "none", "epochs": 0, "recipe": "fast"},
        "matrix": {"dataset": ["toy"], "seed": [1, 2]},
    }
    path = tmp_path / "zs.yaml"
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


def test_a_run_busy_in_another_process_is_running_elsewhere_not_failed(toy_weights, tmp_path, cache_env):
    """Two sweeps on one store: a run the other sweep holds is skipped and listed, and the exit code stays 0."""
    from calprompt.experiments.rundir import run_lock
    from calprompt.experiments.store import iter_failures
    from calprompt.experiments.sweep import load_sweep, plan_sweep

    sweep_file = _zero_shot_sweep(tmp_path, toy_weights)
    store = tmp_path / "store"
    held = plan_sweep(load_sweep(sweep_file), store).runs[0]
    with run_lock(held.run_dir):  # the other sweep's process: an flock on its own open file conflicts with ours
        result = CliRunner().invoke(app, ["sweep", str(sweep_file), "--store", str(store), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "done 1, failed 0, skipped 0 (finished before), 1 running elsewhere" in result.output
    assert f"running elsewhere (skipped) {held.label}" in result.output and "FAILED" not in result.output
    assert list(iter_failures(store)) == []
    again = plan_sweep(load_sweep(sweep_file), store)
    assert [run.finished for run in again.runs] == [False, True] and again.failed_before == set()


def test_sweep_force_runs_finished_runs_again(toy_weights, tmp_path, cache_env):
    sweep_file = _zero_shot_sweep(tmp_path, toy_weights)
    store = tmp_path / "store"
    args = ["sweep", str(sweep_file), "--store", str(store), "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 0
    first = {path.parent.name: path.stat().st_mtime_ns for path in store.glob("runs/*/finished.json")}
    skipped = CliRunner().invoke(app, args)
    assert "done 0, failed 0, skipped 2" in skipped.output
    forced = CliRunner().invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "2 to run (--force)" in forced.output and "done 2, failed 0, skipped 0" in forced.output
    after = {path.parent.name: path.stat().st_mtime_ns for path in store.glob("runs/*/finished.json")}
    assert after.keys() == first.keys() and all(after[name] > first[name] for name in first)


def test_every_calibrator_the_docs_name_is_exported_by_calprompt_calibration():
    import re
    from pathlib import Path

    import calprompt.calibration

    readme = (Path(__file__).parents[2] / "docs" / "objectives.md").read_text(encoding="utf-8")
    section = readme.split("Post-hoc calibrators (", 1)[1].split("\n\n", 2)[1]  # the bullet list after the heading line
    named = re.findall(r"^- `([A-Z]\w+)\(", section, flags=re.MULTILINE)
    named += re.findall(r" and `([A-Z]\w+)\(", section)
    assert set(named) >= {"TemperatureScaling", "DistanceAwareCalibration", "HistogramBinning", "SplitConformal"}
    assert [name for name in named if name not in calprompt.calibration.__all__] == []
    for name in named:
        assert getattr(calprompt.calibration, name).__name__ == name


@pytest.mark.parametrize("kind", ["typer", "click"])
def test_a_usage_error_raised_inside_a_command_is_one_line_and_exit_1(kind):
    """The wrapper of every command: typer's own (vendored click) and click's usage errors are user errors too."""
    import click
    import typer

    from calprompt.cli.main import friendly_errors

    error = typer.BadParameter if kind == "typer" else click.BadParameter
    probe = typer.Typer()

    @probe.command()
    @friendly_errors
    def command() -> None:
        raise error("Expected `--out` to be a folder, got a file.", param_hint="'--out'")

    result = CliRunner().invoke(probe, [])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and "Internal error" not in result.output
    assert lines == ["Error: Invalid value for '--out': Expected `--out` to be a folder, got a file."]
