"""Paper-style tables: accuracy and ECE (in %) of base and novel classes, averaged over seeds."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# (column title, metrics.json key, report field)
BASE_NOVEL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("base acc", "base", "accuracy"),
    ("base ECE", "base", "ece"),
    ("novel acc", "novel", "accuracy"),
    ("novel ECE", "novel", "ece"),
)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_cell(values: Sequence[float], percent: bool = True) -> str:
    """``"51.0 ± 0.5"`` over seeds (``"51.0"`` for one seed); fractions shown as percentages."""
    scale = 100.0 if percent else 1.0
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {std:.1f}"


def base_novel_table(
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    columns: Sequence[tuple[str, str, str]] = BASE_NOVEL_COLUMNS,
) -> str:
    """A markdown table: one row per label, each cell the mean ± std over that row's runs' ``metrics.json``.

    Cells whose split is missing from a run (e.g. novel classes under the ``all`` protocol) are left empty.
    """
    header = "| | " + " | ".join(title for title, _, _ in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for label, runs in rows.items():
        cells = []
        for _, split, field in columns:
            values = [run[split][field] for run in runs if run.get(split)]
            cells.append(format_cell(values) if values else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
