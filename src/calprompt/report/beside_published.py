"""Measured beside published: a published table shipped as package data, set row by row against a store's runs.

A published table (``calprompt/report/published/<name>.yaml``) holds 11-dataset averages of base and novel accuracy
and ECE for each method x objective row its source reports, the settings it was measured under and where it comes
from. `beside_published` gives, per published row that the store also has: the published values, the measured ones
(the same row's average over the store's datasets, mean over seeds) and their difference, plus one line per setting
in which the store's runs differ from the published ones (backbone, shots, seeds, precision, protocol, datasets), so a
difference is never read as a failed reproduction when the settings were not the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from calprompt._validation import fail_unknown
from calprompt.report.cells import Cell, RowKey, Table
from calprompt.report.tables import QUANTITIES, Results, mean_value

# (column title, field of the YAML row): the published quantities, in the tables' order
COLUMNS = tuple((title, f"{split}_{'acc' if field == 'accuracy' else 'ece'}") for title, split, field in QUANTITIES[:4])
_SETTINGS = ("backbone", "pretrained", "shots", "precision", "protocol")


@dataclass(frozen=True)
class PublishedRow:
    key: RowKey
    values: dict[str, float | None]  # YAML field -> value in %


@dataclass(frozen=True)
class Published:
    name: str
    source: str
    settings: dict[str, Any]
    rows: tuple[PublishedRow, ...]
    caveats: tuple[str, ...] = ()


def available_published() -> list[str]:
    """Names of the shipped published tables (``--published NAME``)."""
    folder = resources.files("calprompt.report") / "published"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_published(name: str) -> Published:
    """The shipped published table ``name`` (unknown names raise, listing the shipped ones)."""
    known = available_published()
    if name not in known:
        fail_unknown("--published", name, known, expected=f"the name of a shipped published table ({', '.join(known)})")
    text = (resources.files("calprompt.report") / "published" / f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    rows = tuple(
        PublishedRow(
            RowKey(row["method"], row["calibration"], row.get("posthoc", "")),
            {field: row.get(field) for _, field in COLUMNS},
        )
        for row in data["rows"]
    )
    return Published(data["name"], " ".join(data["source"].split()), data["settings"], rows, tuple(data["caveats"]))


def _measured_keys(results: Results, key: RowKey) -> list[RowKey]:
    """The store's rows for a published row: same method, calibration and post-hoc step, whatever other settings."""
    return [
        k for k in results.rows if (k.method, k.calibration, k.posthoc) == (key.method, key.calibration, key.posthoc)
    ]


def beside_published(results: Results, published: Published, runs: Sequence[Any]) -> tuple[Table, list[str]]:
    """The comparison table (rows: published, measured, measured - published, per published row the store has) and
    the notes: the source, how the settings differ, the caveats."""
    rows: list[tuple[str, tuple[Cell, ...]]] = []
    for row in published.rows:
        paper = tuple(Cell(() if row.values[f] is None else (row.values[f] / 100,)) for _, f in COLUMNS)
        rows.append((f"{row.key.label} ({published.name})", paper))
        for key in _measured_keys(results, row.key):
            measured = [mean_value(results, key, None, split, field) for _, split, field in QUANTITIES[:4]]
            here = tuple(Cell(() if m is None else (m,)) for m in measured)
            differences = tuple(
                Cell((m - p.values[0],), delta=True) if m is not None and p.values else Cell((), delta=True)
                for m, p in zip(measured, paper, strict=True)
            )
            rows += [
                (f"{key.label} (measured)", here),
                (f"{key.label}: measured − {published.name}", differences),
            ]
    table = Table(f"measured beside {published.name}", tuple(t for t, _ in COLUMNS), tuple(rows), ("",) * len(COLUMNS))
    notes = [f"Published values: {published.source}.", *settings_differences(published, runs), *published.caveats]
    if not any(_measured_keys(results, row.key) for row in published.rows):
        notes.insert(1, f"No row of this report is among the {len(published.rows)} rows published in {published.name}.")
    return table, notes


def settings_differences(published: Published, runs: Sequence[Any]) -> list[str]:
    """One line per setting in which the runs differ from the published ones (empty when none differ)."""
    wanted = published.settings
    lines = []
    for name in _SETTINGS:
        here = sorted({str(run.config.get(name)) for run in runs})
        if here != [str(wanted.get(name))]:
            lines.append(f"{name} differs: here {', '.join(here)}; {published.name}: {wanted.get(name)}.")
    seeds = sorted({int(run.config["seed"]) for run in runs})
    if seeds != sorted(wanted["seeds"]):
        lines.append(f"seeds differ: here {_listed(seeds)}; {published.name}: {_listed(wanted['seeds'])}.")
    datasets = sorted({run.config["dataset"] for run in runs})
    if datasets != sorted(wanted["datasets"]):
        shared = sorted(set(datasets) & set(wanted["datasets"]))
        lines.append(
            f"datasets differ: the measured averages are over {', '.join(datasets)} ({len(shared)} of the "
            f"{len(wanted['datasets'])} averaged in {published.name})."
        )
    return lines


def _listed(values: Sequence[Any]) -> str:
    return ", ".join(map(str, values))
