"""The local grid: runs every cell once, skips finished runs, and tabulates mean ± std over seeds and datasets."""

from __future__ import annotations

import pytest

from calprompt.experiments import grid as grid_module
from calprompt.experiments.config import RunConfig
from calprompt.experiments.grid import grid_tables, parse_entries, run_grid


def test_parse_entries():
    entries = parse_entries(["zeroshot", "coop:ours", "coop:none"])
    assert [(e.label, e.method, e.calibration) for e in entries] == [
        ("zeroshot", "zeroshot", "none"),
        ("coop + ours", "coop", "ours"),
        ("coop", "coop", "none"),
    ]
    with pytest.raises(ValueError, match="METHOD"):
        parse_entries([":ours"])


def test_grid_runs_once_and_tabulates(toy_weights, tmp_path, cache_env, monkeypatch):
    base = RunConfig(shots=1, epochs=1, batch_size=8, pretrained=toy_weights)
    entries = parse_entries(["zeroshot", "coop:ours"])
    results = run_grid(base, ["toy", "toy-texture"], entries, [1, 2], tmp_path)
    assert {d: {k: len(v) for k, v in rows.items()} for d, rows in results.items()} == {
        "toy": {"zeroshot": 2, "coop + ours": 2},
        "toy-texture": {"zeroshot": 2, "coop + ours": 2},
    }
    tables = grid_tables(results)
    assert "### toy\n" in tables and "### average over 2 datasets" in tables and "| coop + ours |" in tables
    zero_shot = results["toy"]["zeroshot"]
    mean = 100 * sum(r["base"]["accuracy"] for r in zero_shot) / 2
    assert f"| zeroshot | {mean:.1f} ±" in tables

    def refuse(*args, **kwargs):
        raise AssertionError("finished runs must not run again")

    monkeypatch.setattr(grid_module, "run_experiment", refuse)
    again = run_grid(base, ["toy", "toy-texture"], entries, [1, 2], tmp_path)
    assert again == results


def test_temperature_scaling_never_fits_on_a_test_split():
    """ImageNet's val split is its test split: the calibration split is a few-shot draw from it, not all of it."""
    from calprompt.data.items import DatasetSplits, Item
    from calprompt.experiments.run import calibration_split

    test = tuple(Item(f"/x/{c}/{i}.jpg", c, f"class {c}") for c in range(3) for i in range(10))
    splits = DatasetSplits("in", ("class 0", "class 1", "class 2"), test[:6], test, test, val_is_test=True)
    chosen = calibration_split(splits, RunConfig(shots=16, seed=1))
    assert len(chosen) == 3 * 4 and set(chosen) < set(test)
    assert calibration_split(splits, RunConfig(shots=16, seed=1)) == chosen  # seeded
    regular = DatasetSplits("pets", splits.classnames, test[:6], test[:5], test)
    assert calibration_split(regular, RunConfig(shots=16, seed=1)) == test[:5]
