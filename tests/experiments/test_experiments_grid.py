"""The local grid (a sweep of datasets x rows x seeds): runs every cell once, skips finished runs, and tabulates mean ±
std over seeds and datasets."""

from __future__ import annotations

import pytest

from calprompt.experiments.config import RunConfig
from calprompt.experiments.store import read_stored_run
from calprompt.experiments.sweep import grid_spec, parse_runs, plan_sweep, run_sweep
from calprompt.report.tables import grid_tables


def test_parse_runs():
    assert parse_runs(["zeroshot", "coop:ours", "coop:none"]) == [
        ("zeroshot", "none"),
        ("coop", "ours"),
        ("coop", "none"),
    ]
    with pytest.raises(ValueError, match="METHOD"):
        parse_runs([":ours"])


def _grid(base, out):
    plan = plan_sweep(grid_spec(base, ["toy", "toy-texture"], parse_runs(["zeroshot", "coop:ours"]), [1, 2]), out)
    summary = run_sweep(plan)
    return plan, summary, [read_stored_run(run.run_dir, plan.store.finished(run.config)) for run in plan.runs]


def test_grid_runs_once_and_tabulates(toy_weights, tmp_path, cache_env, monkeypatch):
    base = {"shots": 1, "epochs": 1, "warmup_epochs": 0, "batch_size": 8, "pretrained": toy_weights}
    plan, summary, runs = _grid(base, tmp_path)
    assert summary.done == 8 and not summary.failed
    cells = [
        (run.config["dataset"], run.config["method"], run.config["calibration"], run.config["seed"]) for run in runs
    ]
    assert cells == [
        (d, m, c, s) for d in ("toy", "toy-texture") for m, c in parse_runs(["zeroshot", "coop:ours"]) for s in (1, 2)
    ]
    tables = grid_tables(runs)
    assert "### toy\n" in tables and "### average over 2 datasets" in tables and "| coop + ours |" in tables
    zero_shot = [run.metrics for run in runs if run.config["dataset"] == "toy" and run.config["method"] == "zeroshot"]
    mean = 100 * sum(r["base"]["accuracy"] for r in zero_shot) / 2
    assert f"| zeroshot | {mean:.1f} ±" in tables

    def refuse(*args, **kwargs):
        raise AssertionError("finished runs must not run again")

    import calprompt.experiments.runner as runner

    monkeypatch.setattr(runner, "run_experiment", refuse)
    plan, summary, again = _grid(base, tmp_path)
    assert len(plan.finished) == 8 and summary.done == 0 and summary.skipped == 8
    assert grid_tables(again) == tables


def test_temperature_scaling_never_fits_on_a_test_split():
    """ImageNet's val split is its test split: the calibration split is a few-shot draw from it, not all of it."""
    from calprompt.data.items import DatasetSplits, Item
    from calprompt.experiments.protocols.base2novel import calibration_split

    test = tuple(Item(f"/x/{c}/{i}.jpg", c, f"class {c}") for c in range(3) for i in range(10))
    splits = DatasetSplits("in", ("class 0", "class 1", "class 2"), test[:6], test, test, val_is_test=True)
    chosen = calibration_split(splits, RunConfig(shots=16, seed=1))
    assert len(chosen) == 3 * 4 and set(chosen) < set(test)
    assert calibration_split(splits, RunConfig(shots=16, seed=1)) == chosen  # seeded
    regular = DatasetSplits("pets", splits.classnames, test[:6], test[:5], test)
    assert calibration_split(regular, RunConfig(shots=16, seed=1)) == test[:5]


def test_grid_with_a_seed_asked_twice_runs_and_counts_it_once(toy_weights, tmp_path, cache_env):
    import json

    from typer.testing import CliRunner

    from calprompt.cli import app

    args = ["grid", "--run", "zeroshot", "--seed", "1", "--seed", "1", "--pretrained", toy_weights, "--recipe", "fast"]
    result = CliRunner().invoke(app, [*args, "--quiet", "--out", str(tmp_path / "grid")])
    assert result.exit_code == 0, result.output
    [finished] = (tmp_path / "grid").glob("runs/*/finished.json")
    base = json.loads((finished.parent / "metrics.json").read_text())["base"]
    tables = (tmp_path / "grid" / "tables.md").read_text()
    assert f"| zeroshot | {100 * base['accuracy']:.1f} | {100 * base['ece']:.1f} |" in tables and "±" not in tables
