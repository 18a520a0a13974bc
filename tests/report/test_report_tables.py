"""Paper-style tables: cells are mean ± sample std over seeds (numpy as the oracle), averages per seed first."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from calprompt.report.tables import collect, grid_tables, paper_tables, quantity_table, summary_table, tables_csv
from tests.report.stored_runs import grid_runs, report, stored_run


def _cell(table, row, column):
    return dict(zip(table.columns, dict(table.rows)[row], strict=True))[column]


def test_quantity_cells_are_seed_mean_and_sample_std():
    runs = grid_runs()
    table = quantity_table(collect(runs), "novel ECE", "novel", "ece")
    assert table.columns == ("toy", "toy-texture", "average")
    ours = [r for r in runs if r.config["calibration"] == "ours"]
    for dataset in ("toy", "toy-texture"):
        expected = np.array([r.metrics["novel"]["ece"] for r in ours if r.config["dataset"] == dataset])
        cell = _cell(table, "coop + ours", dataset)
        assert cell.values == pytest.approx(expected)  # seeds 1, 2, 3 in order
        assert cell.text == f"{100 * expected.mean():.1f} ± {100 * expected.std(ddof=1):.1f}"
    # the average: per seed over datasets, then over seeds
    per_seed = np.array([[r.metrics["novel"]["ece"] for r in ours if r.config["seed"] == s] for s in (1, 2, 3)]).mean(
        axis=1
    )
    assert _cell(table, "coop + ours", "average").values == pytest.approx(per_seed)


def test_posthoc_rows_read_their_splits_and_hm_is_computed_per_seed():
    runs = [r for r in grid_runs(datasets=("toy",)) if r.config["method"] == "coop"]
    results = collect(runs)
    labels = [key.label for key in results.rows]
    assert labels == ["coop", "coop + TS", "coop + DAC", "coop + TS + DAC", "coop + ours"]
    table = summary_table(results)
    plain = sorted((r for r in runs if r.config["calibration"] == "none"), key=lambda r: r.config["seed"])
    assert _cell(table, "coop + TS", "base ECE").values == pytest.approx([r.metrics["base+ts"]["ece"] for r in plain])
    # DAC is the identity on base classes: the base column shows the raw run
    assert _cell(table, "coop + DAC", "base ECE").values == pytest.approx([r.metrics["base"]["ece"] for r in plain])
    assert _cell(table, "coop + DAC", "novel ECE").values == pytest.approx(
        [r.metrics["novel+dac"]["ece"] for r in plain]
    )
    hm = [
        2 * b * n / (b + n) for b, n in ((r.metrics["base"]["accuracy"], r.metrics["novel"]["accuracy"]) for r in plain)
    ]
    assert _cell(table, "coop", "HM").values == pytest.approx(hm)
    # post-hoc rows for every calibration on request
    assert "coop + ours + TS" in [k.label for k in collect(runs, posthoc_all=True).rows]


def test_runs_of_other_settings_are_separate_rows_and_recipe_values_are_not_a_difference():
    # 50 = the toy fast recipe: a run leaves it out of its row (tests/experiments/test_experiments_settings.py)
    runs = [
        stored_run("toy", "coop", "none", 1, shots=4, epochs=50, from_recipe=("epochs",)),
        stored_run("toy", "coop", "none", 1, shots=16, epochs=50, from_recipe=("epochs",)),
        stored_run("toy", "coop", "none", 2, shots=16, epochs=50, from_recipe=("epochs",)),
    ]
    rows = [key.label for key in collect(runs).rows if not key.posthoc]
    assert rows == ["coop (shots=16)", "coop (shots=4)"]


def test_a_seed_missing_a_dataset_is_left_out_of_the_average():
    runs = [*grid_runs(datasets=("toy",), seeds=(1, 2)), *grid_runs(datasets=("toy-texture",), seeds=(1,))]
    table = quantity_table(collect(runs), "base acc", "base", "accuracy")
    assert len(_cell(table, "coop", "toy").values) == 2
    assert len(_cell(table, "coop", "average").values) == 1


def test_csv_holds_every_cell_with_its_per_seed_values():
    tables = paper_tables(collect(grid_runs()))
    rows = list(csv.DictReader(io.StringIO(tables_csv(tables))))
    n_cells = sum(1 for t in tables for _, cells in t.rows for c in cells if c.values)
    assert len(rows) == n_cells
    row = next(r for r in rows if r["table"] == "novel ECE" and r["row"] == "coop + ours" and r["column"] == "toy")
    values = [float(v) for v in row["values"].split(";")]
    assert float(row["mean"]) == pytest.approx(np.mean(values)) and int(row["n"]) == 3
    assert float(row["std"]) == pytest.approx(np.std(values, ddof=1))


def test_transfer_targets_get_their_own_tables():
    runs = grid_runs(datasets=("toy",), seeds=(1,))
    for run in runs:
        run.metrics["eval:toy-domain"] = run.metrics["novel"]
    titles = [t.title for t in paper_tables(collect(runs))]
    assert titles[-2:] == ["transfer accuracy", "transfer ECE"]
    table = paper_tables(collect(runs))[-1]
    assert table.columns == ("toy -> toy-domain", "Δ toy -> toy-domain")


def _on_root(root: str, seed: int):
    """A run on the data folder ``root``: like every run, it does not record its root among its row settings."""
    run = stored_run("folder", "coop", "ours", seed, root=root)
    del run.row["root"]
    return run


@pytest.mark.parametrize("seeds", [(1, 2), (1, 1)])
def test_runs_on_two_data_roots_are_two_rows_never_seeds_of_one(seeds):
    runs = [_on_root("/data/a", seeds[0]), _on_root("/data/b", seeds[1])]
    results = collect(runs)
    assert [key.label for key in results.rows] == ["coop + ours (root=/data/a)", "coop + ours (root=/data/b)"]
    for key, run in zip(results.rows, runs, strict=True):
        assert results.cells[key] == {
            "folder": {run.config["seed"]: {"base": run.metrics["base"], "novel": run.metrics["novel"]}}
        }


def test_a_setting_that_differs_between_seeds_still_splits_the_row():
    runs = [stored_run("toy", "coop", "none", 1, shots=4), stored_run("toy", "coop", "none", 2, shots=16)]
    rows = [key.label for key in collect(runs).rows if not key.posthoc]
    assert rows == ["coop (shots=16)", "coop (shots=4)"]


def test_a_run_listed_twice_counts_once():
    run = stored_run("toy", "coop", "ours", 1)
    table = summary_table(collect([run, run]))
    assert _cell(table, "coop + ours", "novel ECE").values == pytest.approx([run.metrics["novel"]["ece"]])
    grid = grid_tables([run, run])
    assert "±" not in grid and f"| coop + ours | {100 * run.metrics['base']['accuracy']:.1f} |" in grid


def test_multi_isotonic_and_procal_rows_and_the_tcpt_metrics_get_into_the_tables():
    runs = [stored_run("toy", "coop", "none", seed) for seed in (1, 2)]
    for run in runs:
        for key in ("multi_isotonic", "procal_density", "procal_isotonic"):
            run.metrics[f"base+{key}"], run.metrics[f"novel+{key}"] = run.metrics["base+ts"], run.metrics["novel+ts"]
        run.metrics["novel"] = {**run.metrics["novel"], "piece": 0.01 * run.config["seed"]}
    results = collect(runs)
    labels = [key.label for key in results.rows]
    assert labels[-3:] == ["coop + multi-isotonic", "coop + ProCal density", "coop + ProCal isotonic"]
    tables = {table.title: table for table in paper_tables(results)}
    assert _cell(tables["novel PIECE"], "coop", "toy").values == (0.01, 0.02)
    assert "base PIECE" not in tables  # no run measured it: no empty table
    mce = [r.metrics["novel"]["sample_weighted_mce"] for r in runs]
    assert _cell(tables["novel sample-weighted MCE"], "coop", "toy").values == pytest.approx(mce)
    assert set(tables["novel macro-F1"].better) - {""} == {"higher"}  # "": difference columns, never marked
    assert set(tables["novel PIECE"].better) - {""} == {"lower"}


def test_a_one_run_cell_shows_the_run_bootstrap_interval_and_csv_carries_it():
    """The interval is the run's own (metrics.json), in %; cells of several seeds show none (a per-run interval says
    nothing about the spread over seeds); CSV's low / high hold the same numbers."""
    import torch

    from calprompt.metrics import evaluate
    from calprompt.report.build import interval_notes

    runs = grid_runs(datasets=("toy",), seeds=(1,))
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 8, (300,), generator=generator)
    logits = 3 * torch.randn(300, 8, generator=generator)
    for run in runs:
        run.metrics["novel"] = evaluate(logits, labels, bootstrap=50, seed=1).to_dict()
    table = summary_table(collect(runs))
    low, high = runs[0].metrics["novel"]["intervals"]["ece"]
    cell = _cell(table, "coop", "novel ECE")
    assert cell.text == f"{100 * runs[0].metrics['novel']['ece']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    assert _cell(table, "coop", "base ECE").interval_text == ""  # this split was stored without intervals
    rows = list(csv.DictReader(io.StringIO(tables_csv([table]))))
    row = next(r for r in rows if r["row"] == "coop" and r["column"] == "novel ECE")
    assert (float(row["low"]), float(row["high"])) == (low, high)
    assert interval_notes(runs) == [
        "Bootstrap intervals (percentile, per run, raw base and novel test): 95% from 50 resamples."
    ]
    for run in runs:  # one split, as test-time and `all` runs have: the note does not speak of novel classes
        run.metrics = {"base": run.metrics["novel"]}
    assert interval_notes(runs) == ["Bootstrap intervals (percentile, per run, raw test): 95% from 50 resamples."]
    two_seeds = grid_runs(datasets=("toy",), seeds=(1, 2))
    for run in two_seeds:
        run.metrics["novel"] = evaluate(logits, labels, bootstrap=50, seed=1).to_dict()
    assert _cell(summary_table(collect(two_seeds)), "coop", "novel ECE").interval_text == ""


def test_test_time_runs_read_as_tpt_and_their_initial_prompt_is_a_row_of_its_own():
    """Issue 22: a test-time run is labelled by what it is (TPT of its method, from its init run's kind), its
    ``init`` report is the "before" row, and init runs of other paths (one per seed) keep the seeds in one row."""
    runs = []
    for seed in (1, 2):
        for init in (None, f"/runs/coop-ours-{seed}"):
            run = stored_run("toy", "coop", "c-tpt", seed, protocol="test-time", init_run=init)
            run.metrics = {"base": report(10 * seed + (init is None)), "init": report(100 * seed + (init is None))}
            run.row["init_run"] = None if init is None else "coop + ours"  # as row_settings records it
            runs.append(run)
    results = collect(runs)
    labels = [key.label for key in results.rows]
    assert labels == [
        "before TPT: coop + ours",
        "before TPT: zero-shot (coop)",
        "TPT (coop) + c-tpt",
        "TPT (coop, init: coop + ours) + c-tpt",
    ]
    by_label = {key.label: results.cells[key]["toy"] for key in results.rows}
    assert by_label["before TPT: zero-shot (coop)"][2]["base"] == report(201)
    assert by_label["TPT (coop, init: coop + ours) + c-tpt"][1]["base"] == report(10)
    assert all(set(cells) == {1, 2} for cells in by_label.values())
    assert "| TPT (coop, init: coop + ours) + c-tpt |" in grid_tables(runs)  # `calprompt grid`'s tables too


def _one_split_runs() -> list:
    """Runs of the ``all`` protocol on two datasets, seeds 1-2: one split (``base``), no novel report."""
    runs = grid_runs(seeds=(1, 2))
    for run in runs:
        run.config["protocol"] = run.row["protocol"] = "all"
        run.metrics = {"base": run.metrics["base"]}
    return runs


def test_a_store_without_novel_splits_gets_accuracy_and_ece_columns_not_empty_novel_ones():
    """Test-time, ``all`` and few-shot runs have one split: their tables say "accuracy" / "ECE" (not "base ...")
    and have no novel or HM column; the cells are still each run's ``base`` numbers (numpy as the oracle)."""
    runs = _one_split_runs()
    results = collect(runs)
    summary = summary_table(results)
    assert summary.columns == ("accuracy", "ECE")
    ours = [r for r in runs if r.config["calibration"] == "ours"]
    per_seed = [np.mean([r.metrics["base"]["ece"] for r in ours if r.config["seed"] == s]) for s in (1, 2)]
    assert _cell(summary, "coop + ours", "ECE").values == pytest.approx(per_seed)
    titles = [table.title for table in paper_tables(results)]
    assert titles[1:] == ["accuracy", "ECE", "sample-weighted MCE", "macro-F1"]  # no "base ...", no novel table
    tables = paper_tables(results)
    assert tables[2].columns[:2] == ("toy", "toy-texture")
    expected = [r.metrics["base"]["ece"] for r in ours if r.config["dataset"] == "toy-texture"]
    assert _cell(tables[2], "coop + ours", "toy-texture").values == pytest.approx(expected)


def test_a_store_mixing_one_split_and_base_to_novel_runs_keeps_base_and_novel_columns():
    runs = _one_split_runs() + grid_runs(seeds=(1, 2))
    summary = summary_table(collect(runs))
    assert summary.columns == ("base acc", "base ECE", "novel acc", "novel ECE", "HM")
    assert "novel ECE" in [table.title for table in paper_tables(collect(runs))]
