"""Paper-style tables from stored runs: rows = method + calibration (+ post-hoc), columns = datasets + average.

A run's ``metrics.json`` holds one evaluation report per split (``base``, ``novel``, ``base+ts``, ``novel+dac``, ...;
named in `calprompt.conventions`) and ``eval:<dataset>`` for transfer targets; its run record holds the settings
that tell its row apart from other runs' (``row``). :func:`collect` groups runs into rows and seeds; the table builders
reduce each (row, dataset) to mean ± sample std over seeds. The average over datasets is taken per seed first
(over the datasets that seed has for that row, only when it has all of them), then summarised over seeds, as the
published 11-dataset averages are.

A run that records why it has no novel classes (``metrics.json["skipped"]["novel"]``: a class-specific method, tuned
and evaluated on every class) shows "n/a" in its novel and HM columns, and the reason under the table: never a blank
that reads as a missing run, never a number.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calprompt.conventions import (
    BASE,
    NOVEL,
    POSTHOC_VARIANTS,
    TARGET_PREFIX,
    TEST_TIME_INIT,
    TEST_TIME_PROTOCOL,
    target_key,
)
from calprompt.metrics.classification import harmonic_mean
from calprompt.report.cells import NOT_APPLICABLE, Cell, RowKey, Table, better_for, format_cell, mean_std
from calprompt.report.differences import with_differences

#: The prefix of the rows of test-time runs' initial prompts (``metrics.json["init"]``).
BEFORE_TUNING = "before TPT: "

# (column title, metrics.json key, report field): the single-dataset table of `calprompt grid`.
BASE_NOVEL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("base acc", BASE, "accuracy"),
    ("base ECE", BASE, "ece"),
    ("novel acc", NOVEL, "accuracy"),
    ("novel ECE", NOVEL, "ece"),
)

# The quantities of the base-to-novel tables: (title, which split, report field); "hm" is computed per seed.
QUANTITIES: tuple[tuple[str, str, str], ...] = (
    ("base acc", BASE, "accuracy"),
    ("base ECE", BASE, "ece"),
    ("novel acc", NOVEL, "accuracy"),
    ("novel ECE", NOVEL, "ece"),
    ("HM", "hm", "accuracy"),
)

# Quantities with a table of their own but no column in the summary: the metrics the TCPT and DAC evaluators print
# besides accuracy and ECE (PIECE only where a run measured its images' proximity).
EXTRA_QUANTITIES: tuple[tuple[str, str, str], ...] = (
    ("base PIECE", BASE, "piece"),
    ("novel PIECE", NOVEL, "piece"),
    ("base sample-weighted MCE", BASE, "sample_weighted_mce"),
    ("novel sample-weighted MCE", NOVEL, "sample_weighted_mce"),
    ("base macro-F1", BASE, "macro_f1"),
    ("novel macro-F1", NOVEL, "macro_f1"),
)


def base_novel_table(
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    columns: Sequence[tuple[str, str, str]] = BASE_NOVEL_COLUMNS,
) -> str:
    """A markdown table: one row per label, each cell the mean ± std over that row's runs' ``metrics.json``.

    Cells whose split is missing from a run (e.g. novel classes under the ``all`` protocol) are left empty, or
    "n/a" when the runs record why the split does not apply (``skipped``).
    """
    header = "| | " + " | ".join(title for title, _, _ in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for label, runs in rows.items():
        cells = []
        for _, split, field_name in columns:
            values = [run[split][field_name] for run in runs if run.get(split)]
            not_applicable = any(run.get("skipped", {}).get(split) for run in runs)
            cells.append(format_cell(values) if values else (NOT_APPLICABLE if not_applicable else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Grouping stored runs into rows
@dataclass
class Results:
    """Per row, dataset and seed: the split reports of one run (post-hoc variants already mapped to base/novel)."""

    cells: dict[RowKey, dict[str, dict[int, dict[str, Any]]]] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)  # transfer targets (``eval:<dataset>`` keys)
    configs: dict[RowKey, dict[str, Any]] = field(default_factory=dict)  # one example config per training row
    not_applicable: dict[RowKey, str] = field(default_factory=dict)  # row -> why it has no novel classes

    @property
    def rows(self) -> list[RowKey]:
        return list(self.cells)


def collect(runs: Iterable[Any], *, posthoc_all: bool = False) -> Results:
    """Group stored runs (objects with ``config``, ``metrics`` and ``row`` dicts) into table rows.

    Each run gives its raw row and, for calibration ``none`` (or every calibration with ``posthoc_all``), one row per
    post-hoc variant it has (``+ TS``, ``+ DAC``, ``+ TS + DAC``). Settings other than method and calibration that
    differ between runs (shots, protocol, method options, the data root, ...) are appended to the row label, so runs
    of different settings are never averaged together. A run given twice (the same directory) counts once.
    """
    runs = list({_identity(run): run for run in runs}.values())
    # The data root is not among the settings a run records as its row (it says where, not how), but runs on two
    # roots are runs on two data sets: never seeds of one row.
    requested = [{**run.row, "root": run.config.get("root")} for run in runs]
    varying = _varying_settings(runs, requested)
    results = Results()
    for run, settings in zip(runs, requested, strict=True):
        config, metrics = run.config, run.metrics
        dataset, seed = config["dataset"], int(config["seed"])
        if dataset not in results.datasets:
            results.datasets.append(dataset)
        method = row_method(config, settings)
        shown = tuple((key, _text(settings.get(key))) for key in varying.get(method, ()))
        has_novel = NOVEL in metrics
        for suffix, base_key, novel_key in POSTHOC_VARIANTS:
            if suffix and not (posthoc_all or config["calibration"] == "none"):
                continue
            own = [k for k in (base_key, novel_key if has_novel else None) if k and k not in (BASE, NOVEL)]
            if suffix and (not own or any(k not in metrics for k in own)):
                continue  # a post-hoc variant this run does not have
            if "DAC" in suffix and metrics.get(novel_key) == metrics.get(novel_key.replace("+dac", "")):
                continue  # DAC was the identity (tuned text = zero-shot text): the row would repeat another
            split_reports = {BASE: metrics.get(base_key), NOVEL: metrics.get(novel_key) if has_novel else None}
            key = RowKey(method, config["calibration"], suffix, shown)
            reason = metrics.get("skipped", {}).get(NOVEL)
            if reason and not has_novel:
                results.not_applicable[key] = reason
            if not suffix:
                split_reports.update({_target_key(k): v for k, v in metrics.items() if k.startswith(TARGET_PREFIX)})
                results.configs.setdefault(key, dict(config))
            results.cells.setdefault(key, {}).setdefault(dataset, {})[seed] = split_reports
        if TEST_TIME_INIT in metrics:  # a test-time run's initial prompt on the same test views: its "before" row
            before = RowKey(before_tuning_method(config, settings), "none", "", shown)
            reports = {BASE: metrics[TEST_TIME_INIT], NOVEL: None}
            results.cells.setdefault(before, {}).setdefault(dataset, {})[seed] = reports
        for target in (_target_key(k).removeprefix(TARGET_PREFIX) for k in metrics if k.startswith(TARGET_PREFIX)):
            if target not in results.targets:
                results.targets.append(target)
    results.cells = dict(sorted(results.cells.items(), key=lambda item: _row_rank(item[0])))
    results.datasets.sort(key=_dataset_rank)
    return results


def _identity(run: Any) -> Any:
    """What makes two stored runs the same run: their directory (a run listed twice is still one run)."""
    path = getattr(run, "path", None)
    return str(path) if path is not None else id(run)


def _varying_settings(runs: list[Any], requested: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per method, the settings that tell apart runs of the same method, calibration and dataset (whatever their
    seeds: a setting that differs between seed 1 and seed 2 makes two rows, not two seeds of one).

    Only those go into row labels: a setting that differs between methods (zero-shot trains 0 epochs) never
    splits a row.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run, settings in zip(runs, requested, strict=True):
        c = run.config
        groups.setdefault((row_method(c, settings), c["calibration"], c["dataset"]), []).append(settings)
    varying: dict[str, set[str]] = {}
    for (method, *_), members in groups.items():
        keys = {key for settings in members for key in settings} - {"method", "calibration", "init_run"}
        varying.setdefault(method, set()).update(
            key for key in keys if len({repr(settings.get(key)) for settings in members}) > 1
        )
    return {method: sorted(keys) for method, keys in varying.items()}


def row_method(config: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The method cell of a run's row: its method, or for a test-time run ``TPT (coop)`` / ``TPT (coop, init:
    coop + ours)`` (the init run's kind, as the run's row records it), so it never reads as the trained method."""
    if config.get("protocol") != TEST_TIME_PROTOCOL:
        return str(config["method"])
    init = settings.get("init_run")
    return f"TPT ({config['method']}{'' if init is None else f', init: {init}'})"


def before_tuning_method(config: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The method cell of a test-time run's initial prompt (``metrics.json["init"]``): zero-shot CLIP, or the init
    run, on the tuned images' test views."""
    init = settings.get("init_run")
    return f"{BEFORE_TUNING}zero-shot ({config['method']})" if init is None else f"{BEFORE_TUNING}{init}"


def _target_key(key: str) -> str:
    """``eval:<dataset>@<root>`` (an evaluation added by `calprompt eval --root`) -> ``eval:<dataset>``."""
    return key.split("@", 1)[0]


def _row_rank(key: RowKey) -> tuple:
    """Paper order: zero-shot first; per method the plain row, its post-hoc variants, the baselines, then ours."""
    calibration = {"none": 0, "ours": 2}.get(key.calibration, 1)
    return (
        key.method != "zeroshot" and not key.method.startswith(BEFORE_TUNING),
        key.method,
        key.settings,
        calibration,
        key.calibration,
        _posthoc_rank(key.posthoc),
    )


def _dataset_rank(name: str) -> tuple[int, str]:
    from calprompt.data import list_datasets

    known = list_datasets()
    return (known.index(name) if name in known else len(known), name)


def _posthoc_rank(suffix: str) -> int:
    return [s for s, _, _ in POSTHOC_VARIANTS].index(suffix)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------------------------------------------
# Tables
def _value(reports: Mapping[str, Any], split: str, field_name: str) -> float | None:
    if split == "hm":
        base, novel = reports.get(BASE), reports.get(NOVEL)
        return harmonic_mean(base["accuracy"], novel["accuracy"]) if base and novel else None
    report = reports.get(split)
    return report.get(field_name) if report else None  # None: a field the run's report predates


def _per_seed(results: Results, key: RowKey, dataset: str, split: str, field_name: str) -> dict[int, float]:
    seeds = results.cells[key].get(dataset, {})
    values = {seed: _value(reports, split, field_name) for seed, reports in sorted(seeds.items())}
    return {seed: value for seed, value in values.items() if value is not None}


def _interval(reports: Mapping[str, Any], split: str, field_name: str) -> tuple[float, float] | None:
    """The run's stored bootstrap interval of ``field_name`` on ``split`` (main splits only), or None."""
    intervals = (reports.get(split) or {}).get("intervals") if split != "hm" else None
    return tuple(intervals[field_name]) if intervals and field_name in intervals else None


def dataset_cell(results: Results, key: RowKey, dataset: str, split: str, field_name: str) -> Cell:
    """One (row, dataset) cell: the value of each seed, and each seed's interval when every seed has one."""
    values = _per_seed(results, key, dataset, split, field_name)
    runs = results.cells[key].get(dataset, {})
    intervals = [_interval(runs[seed], split, field_name) for seed in values]
    kept = tuple(i for i in intervals if i is not None)
    return Cell(tuple(values.values()), tuple(values), kept if len(kept) == len(values) else ())


def _average(results: Results, key: RowKey, split: str, field_name: str) -> Cell:
    """Per seed the mean over every dataset of the table (seeds missing any dataset are left out)."""
    per_dataset = [_per_seed(results, key, dataset, split, field_name) for dataset in results.datasets]
    seeds = sorted(set.intersection(*(set(values) for values in per_dataset)) if per_dataset else set())
    return Cell(tuple(statistics.fmean(values[seed] for values in per_dataset) for seed in seeds), tuple(seeds))


def _cell(results: Results, key: RowKey, split: str, field_name: str) -> Cell:
    """The dataset's cell for a one-dataset table, else the average over the datasets."""
    if len(results.datasets) == 1:
        return dataset_cell(results, key, results.datasets[0], split, field_name)
    return _average(results, key, split, field_name)


def _marked(results: Results, key: RowKey, split: str, cell: Cell) -> Cell:
    """``cell``, or "n/a" where it is empty because the split does not apply to the row (see the module docstring)."""
    if cell.values or split not in (NOVEL, "hm") or key not in results.not_applicable:
        return cell
    return Cell((), note=NOT_APPLICABLE)


def _notes(results: Results, rows: Sequence[tuple[str, tuple[Cell, ...]]], keys: Sequence[RowKey]) -> tuple[str, ...]:
    """'method: reason' once per method with an n/a cell in a shown row (its post-hoc and objective rows share it)."""
    marked = {label for label, cells in rows if any(cell.note for cell in cells)}
    return tuple(sorted({f"{key.method}: {results.not_applicable[key]}" for key in keys if key.label in marked}))


def quantity_table(results: Results, title: str, split: str, field_name: str) -> Table:
    """One quantity (e.g. novel ECE): rows x (datasets + average over datasets)."""
    rows, keys = [], []
    for key in results.rows:
        cells = [dataset_cell(results, key, d, split, field_name) for d in results.datasets]
        if len(results.datasets) > 1:
            cells.append(_average(results, key, split, field_name))
        cells = [_marked(results, key, split, cell) for cell in cells]
        if any(cell.values or cell.note for cell in cells):
            rows.append((key.label, tuple(cells)))
            keys.append(key)
    columns = (*results.datasets, "average") if len(results.datasets) > 1 else tuple(results.datasets)
    better = (better_for(field_name),) * len(columns)
    return Table(title, columns, tuple(rows), better, tuple(keys), _notes(results, rows, keys))


def has_novel(results: Results) -> bool:
    """Whether any run of the results was evaluated on novel classes (read from the runs' files)."""
    return any(
        reports.get(NOVEL) is not None
        for per_dataset in results.cells.values()
        for per_seed in per_dataset.values()
        for reports in per_seed.values()
    )


def shown_quantities(results: Results, quantities: Sequence[tuple[str, str, str]]) -> tuple[tuple[str, str, str], ...]:
    """``quantities`` as the tables of ``results`` show them: where no run has novel classes (test-time, ``all`` and
    few-shot runs), the one split is every class of the test split, so its columns drop "base" from their titles and
    the novel and HM columns, which would be empty, are left out."""
    if has_novel(results):
        return tuple(quantities)
    return tuple(
        ("accuracy" if title == "base acc" else title.removeprefix("base "), split, field_name)
        for title, split, field_name in quantities
        if split == BASE
    )


def summary_table(results: Results) -> Table:
    """The headline table: rows x (base acc, base ECE, novel acc, novel ECE, HM), averaged over the datasets (rows x
    (accuracy, ECE) where no run has novel classes)."""
    scope = results.datasets[0] if len(results.datasets) == 1 else f"average over {len(results.datasets)} datasets"
    quantities = shown_quantities(results, QUANTITIES)
    rows, keys = [], []
    for key in results.rows:
        cells = tuple(
            _marked(results, key, split, _cell(results, key, split, field_name)) for _, split, field_name in quantities
        )
        if any(cell.values for cell in cells):
            rows.append((key.label, cells))
            keys.append(key)
    better = tuple(better_for(field_name) for _, _, field_name in quantities)
    titles = tuple(title for title, _, _ in quantities)
    return Table(scope, titles, tuple(rows), better, tuple(keys), _notes(results, rows, keys))


def transfer_table(results: Results, field_name: str) -> Table:
    """Prompts evaluated on other datasets (``eval:<target>``): rows x (source -> target)."""
    columns, cells_by_row = [], {}
    pairs = [(d, t) for d in results.datasets for t in results.targets]
    for key in (k for k in results.rows if not k.posthoc):
        cells_by_row[key] = tuple(dataset_cell(results, key, d, target_key(t), field_name) for d, t in pairs)
    kept = [i for i, _ in enumerate(pairs) if any(cells[i].values for cells in cells_by_row.values())]
    columns = [f"{pairs[i][0]} -> {pairs[i][1]}" for i in kept]
    rows = [(key, tuple(cells[i] for i in kept)) for key, cells in cells_by_row.items() if kept]
    rows = [(key, cells) for key, cells in rows if any(c.values for c in cells)]
    title = "accuracy" if field_name == "accuracy" else field_name.upper()
    better = (better_for(field_name),) * len(columns)
    return Table(
        f"transfer {title}", tuple(columns), tuple((k.label, c) for k, c in rows), better, tuple(k for k, _ in rows)
    )


def paper_tables(results: Results) -> list[Table]:
    """Every non-empty table: the summary, one per quantity (when there are several datasets: with one, the summary
    holds every number of them; the quantities it has no column for, PIECE, sample-weighted MCE and macro-F1, always),
    and the transfer tables when targets were evaluated; each with its differences."""
    tables = [with_differences(summary_table(results))]
    quantities = (*(QUANTITIES if len(results.datasets) > 1 else ()), *EXTRA_QUANTITIES)  # one dataset: the summary
    for title, split, field_name in shown_quantities(results, quantities):
        table = quantity_table(results, title, split, field_name)
        tables.append(with_differences(table, [len(table.columns) - 1]))  # beside the average (or the one dataset)
    if results.targets:
        tables += [
            with_differences(transfer_table(results, "accuracy")),
            with_differences(transfer_table(results, "ece")),
        ]
    return [table for table in tables if table.rows]


#: How to read every table (the Markdown and HTML reports open with it).
TABLE_LEGEND = (
    "Accuracy, ECE and the other metrics in %, mean ± sample std over seeds; [low, high]: the run's bootstrap"
    " interval (95%, cells of one run); **bold**: the best value of its column; Δ: the row minus its method's `none`"
    " row (paired by seed, in percentage points)."
)


def tables_markdown(tables: Sequence[Table]) -> str:
    """Every table as Markdown, each under a heading (values in %, mean ± std over seeds)."""
    sections = [f"### {table.title}\n\n{table.to_markdown()}" for table in tables]
    return f"{TABLE_LEGEND}\n\n" + "\n\n".join(sections) + "\n"


def tables_csv(tables: Sequence[Table]) -> str:
    """Every cell in long form: table, row, column, mean, std, n, the per-seed values (fractions), the bootstrap
    interval of a one-run cell (``low``, ``high``) and whether the cell is its column's best (``best``: 1 or 0)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "row", "column", "mean", "std", "n", "values", "low", "high", "best"])
    for table in tables:
        best = table.best()
        for i, (label, cells) in enumerate(table.rows):
            for j, (column, cell) in enumerate(zip(table.columns, cells, strict=True)):
                if cell.values:
                    mean, std = mean_std(cell.values)
                    values = ";".join(repr(v) for v in cell.values)
                    low, high = cell.intervals[0] if cell.interval_text else ("", "")
                    row = [table.title, label, column, repr(mean), repr(std), len(cell.values), values]
                    writer.writerow(
                        [*row, repr(low) if low != "" else "", repr(high) if high != "" else "", int((i, j) in best)]
                    )
    return buffer.getvalue()


def grid_tables(runs: Sequence[Any]) -> str:
    """The tables of ``calprompt grid``: per dataset, one row per method + calibration (in the order of ``runs``,
    objects with ``config`` and ``metrics``), each cell mean ± std over its seeds; then the average over datasets
    (per-seed averages, then mean ± std)."""
    results: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for run in {_identity(run): run for run in runs}.values():  # a run listed twice is one run, not two seeds
        method, calibration = row_method(run.config, getattr(run, "row", {})), run.config["calibration"]
        label = method if calibration == "none" else f"{method} + {calibration}"
        results.setdefault(run.config["dataset"], {}).setdefault(label, []).append(run.metrics)
    sections = [f"### {dataset}\n\n{base_novel_table(rows)}" for dataset, rows in results.items()]
    if len(results) > 1:
        sections.append(f"### average over {len(results)} datasets\n\n{base_novel_table(_grid_average(results))}")
    return "\n\n".join(sections) + "\n"


def _grid_average(results: dict[str, dict[str, list[Mapping[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Per label and seed index, the mean of each metric over datasets (a pseudo-run per seed)."""
    datasets = list(results.values())
    averaged: dict[str, list[dict[str, Any]]] = {}
    for label in datasets[0]:
        per_seed = zip(*(rows[label] for rows in datasets), strict=True)
        runs = []
        for seed_runs in per_seed:
            run: dict[str, Any] = {}
            for split in (BASE, NOVEL):
                if all(r.get(split) for r in seed_runs):
                    run[split] = {
                        key: sum(r[split][key] for r in seed_runs) / len(seed_runs) for key in ("accuracy", "ece")
                    }
            runs.append(run)
        averaged[label] = runs
    return averaged


def mean_value(results: Results, key: RowKey, dataset: str | None, split: str, field_name: str) -> float | None:
    """The mean over seeds of one quantity of a row on ``dataset`` (None: the average over the datasets), or None
    when the row lacks it (what the headline figures plot)."""
    if key not in results.cells:
        return None
    cell = (
        dataset_cell(results, key, dataset, split, field_name) if dataset else _average(results, key, split, field_name)
    )
    return statistics.fmean(cell.values) if cell.values else None
