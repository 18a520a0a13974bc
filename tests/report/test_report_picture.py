"""The report as a picture, checked in headless Chromium at 1,280 px and against the stored numbers.

- every dataset (and the average over datasets) has its headline figures, drawn and visible in the page;
- no reliability grid is wider than the page at 1,280 px, and none is scaled down (readable at 100 % zoom);
- the best value of each column is marked (the row numpy finds best from the runs' metrics), difference columns
  hold the paired differences to the method's ``none`` row, computed here from the metrics;
- ``published="paper"`` adds the paper's rows (the published numbers re-typed from the reference) and says which
  settings differ; the page still makes no request.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest

from calprompt.report.beside_published import available_published, load_published
from calprompt.report.build import write_report
from calprompt.report.tables import collect, paper_tables
from tests.report.chromium import layout, needs_chromium, open_page, page_requests
from tests.report.stored_runs import grid_runs

DATASETS = ("toy", "toy-texture")


@pytest.fixture(scope="module")
def runs():
    return grid_runs(datasets=DATASETS, seeds=(1, 2))


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    return write_report(runs, tmp_path_factory.mktemp("picture"), published="paper")


def _metric(runs, method, calibration, dataset, split, field):
    """Per seed (1, 2) the run's value: the oracle the tables are checked against."""
    chosen = [
        r
        for r in runs
        if (r.config["method"], r.config["calibration"], r.config["dataset"]) == (method, calibration, dataset)
    ]
    return np.array([r.metrics[split][field] for r in sorted(chosen, key=lambda r: r.config["seed"])])


@needs_chromium
def test_headline_figures_per_dataset_are_drawn_and_visible_and_grids_fit_1280px(report, tmp_path):
    text = report.html.read_text(encoding="utf-8")
    for scope in (*DATASETS, "average over 2 datasets"):
        assert "<h3 id='headline-" in text and f">{scope} · base2novel</h3>" in text
    probe = layout(report.html, tmp_path / "probe", width=1280)
    headline = [image for image in probe["images"] if image["cls"] == "headline"]
    grids = [image for image in probe["images"] if image["cls"] == "reliability"]
    assert len(headline) == 2 * 3  # movement + ECE bars for toy, toy-texture and the average
    assert all(image["visible"] and image["natural"] > 0 for image in headline)
    assert grids and probe["viewport"] == 1280 and probe["page"] <= 1280
    for image in grids:
        assert image["visible"] and image["right"] <= 1280
        assert image["width"] == image["natural"] <= 1280  # drawn at its own size: readable at 100 % zoom


@needs_chromium
def test_best_values_differences_and_published_rows_render_without_requests(report, tmp_path):
    dom, _, netlog = open_page(report.html, tmp_path / "page", width=1280)
    assert page_requests(netlog) == set()
    summary = report.tables[0]
    n_value_columns = sum(1 for direction in summary.better if direction)
    first = dom[dom.index("<table") : dom.index("</table>")]
    assert len(re.findall(r'<td class="best">', first)) >= n_value_columns
    for column in summary.columns:  # each quantity, then its difference column
        assert f'<th class="delta">{column}</th>' in first if column.startswith("Δ ") else f"<th>{column}</th>" in first
    assert [c for c in summary.columns if c.startswith("Δ ")] == [
        f"Δ {c}" for c in ("base acc", "base ECE", "novel acc", "novel ECE", "HM")
    ]
    assert "coop + ours (paper)" in dom and "coop + ours: measured − paper" in dom
    assert "backbone differs" in dom and "shots differ" not in dom  # the runs use 16 shots, as the paper


# row label suffix -> the metrics.json keys its base and novel columns read (re-typed: DAC acts on novel classes only)
SPLIT_KEYS = {"": ("base", "novel"), " + TS": ("base+ts", "novel+ts"), " + DAC": ("base", "novel+dac")}
SPLIT_KEYS[" + TS + DAC"] = ("base+ts", "novel+ts+dac")


def _oracle(runs, label, split, field):
    """The summary's mean for a row label, from the runs' metrics: per seed the mean over datasets, then over seeds."""
    suffix = next(s for s in sorted(SPLIT_KEYS, key=len, reverse=True) if label.endswith(s) or not s)
    method, _, calibration = label.removesuffix(suffix).partition(" + ")
    key = SPLIT_KEYS[suffix][split == "novel"]
    return np.mean([_metric(runs, method, calibration or "none", d, key, field) for d in DATASETS])


@pytest.mark.parametrize(
    ("column", "split", "field", "pick"), [("novel ECE", "novel", "ece", min), ("base acc", "base", "accuracy", max)]
)
def test_best_value_of_each_column_is_the_one_numpy_finds(runs, column, split, field, pick):
    table = paper_tables(collect(runs))[0]  # the summary: averages over both datasets, mean over seeds
    j = table.columns.index(column)
    shown = {i: round(100 * _oracle(runs, label, split, field), 1) for i, (label, _) in enumerate(table.rows)}
    winners = {i for i, value in shown.items() if value == pick(shown.values())}
    assert {i for i, jj in table.best() if jj == j} == winners
    for i in winners:
        assert f"**{table.rows[i][1][j].text}**" in table.to_markdown()


def test_difference_columns_are_paired_differences_to_the_method_none_row(runs):
    table = paper_tables(collect(runs))[0]
    j = table.columns.index("Δ novel ECE")
    cells = dict(table.rows)
    ours = np.mean([_metric(runs, "coop", "ours", d, "novel", "ece") for d in DATASETS], axis=0)  # per seed
    none = np.mean([_metric(runs, "coop", "none", d, "novel", "ece") for d in DATASETS], axis=0)
    assert cells["coop + ours"][j].values == pytest.approx(ours - none, abs=1e-12)
    assert cells["coop"][j].values == () and cells["zeroshot"][j].values == ()
    expected = f"{100 * (ours - none).mean():+.1f}"
    assert cells["coop + ours"][j].text.startswith(expected)


def test_published_paper_rows_are_the_published_numbers_and_csv_carries_them(report, runs):
    assert "paper" in available_published()
    paper = {row.key.label: row.values for row in load_published("paper").rows}
    # the seed paper's 11-dataset averages (base acc / ECE, novel acc / ECE)
    assert paper["coop + ours"] == {"base_acc": 82.58, "base_ece": 2.93, "novel_acc": 69.28, "novel_ece": 4.79}
    assert paper["zeroshot"]["novel_ece"] == 4.43 and paper["coop + DAC"]["novel_ece"] == 7.00
    rows = list(csv.DictReader(io.StringIO(report.csv.read_text(encoding="utf-8"))))
    published = {(r["row"], r["column"]): float(r["mean"]) for r in rows if r["table"] == "measured beside paper"}
    assert published[("coop + ours (paper)", "novel ECE")] == pytest.approx(0.0479)
    measured = np.mean([_metric(runs, "coop", "ours", d, "novel", "ece") for d in DATASETS])
    assert published[("coop + ours (measured)", "novel ECE")] == pytest.approx(measured, abs=1e-12)
    assert published[("coop + ours: measured − paper", "novel ECE")] == pytest.approx(measured - 0.0479, abs=1e-12)
    markdown = report.markdown.read_text(encoding="utf-8")
    assert "### measured beside paper" in markdown and "| coop + ours (paper) | 82.6 | 2.9 | 69.3 | 4.8 |" in markdown
    assert "seeds differ: here 1, 2; paper: 1, 2, 3." in markdown and "datasets differ" in markdown


def test_an_unknown_published_table_is_refused_naming_the_shipped_ones(runs, tmp_path):
    expected = r"Expected `--published` to be the name of a shipped published table \(paper\), got 'papr'"
    with pytest.raises(ValueError, match=expected + r". Did you mean 'paper'\?"):
        write_report(runs, tmp_path, published="papr")


def test_the_all_protocol_gets_the_single_split_headline(tmp_path):
    """Runs of the `all` protocol (no novel classes) get ECE against accuracy on their one split, beside the
    base-to-novel headline of the same dataset; each figure is 580 x 500 px (two fit side by side at 1,280 px)."""
    from PIL import Image

    from calprompt.report.headline import headline_figures, scopes

    runs = grid_runs(datasets=("toy",), seeds=(1,))
    for run in grid_runs(datasets=("toy",), seeds=(1,)):
        run.config["protocol"] = run.row["protocol"] = "all"
        run.metrics = {key: value for key, value in run.metrics.items() if not key.startswith("novel")}
        run.path = run.path.with_name(run.path.name + "-all")
        runs.append(run)
    results = collect(runs)
    assert sorted((s.title, s.has_novel) for s in scopes(results)) == [("toy · all", False), ("toy · base2novel", True)]
    drawn = headline_figures(results, tmp_path)
    assert len(drawn) == 4
    for _, _, path in drawn:
        with Image.open(path) as image:
            assert image.size == (580, 500)
