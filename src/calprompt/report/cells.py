"""The cells of a report table: what a row stands for (`RowKey`), per-seed values (`Cell`) and a table that knows
which way each column is better, so the best value can be marked wherever the table is written."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_cell(values: Sequence[float], percent: bool = True) -> str:
    """``"51.0 ± 0.5"`` over seeds (``"51.0"`` for one seed); fractions shown as percentages."""
    scale = 100.0 if percent else 1.0
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {std:.1f}"


@dataclass(frozen=True)
class RowKey:
    """What a table row stands for: a method, a train-time calibration, a post-hoc variant and other settings."""

    method: str
    calibration: str
    posthoc: str = ""
    settings: tuple[tuple[str, str], ...] = ()  # config fields that differ between rows of the store, as text

    @property
    def label(self) -> str:
        parts = [self.method] + [p for p in (self.calibration if self.calibration != "none" else "", self.posthoc) if p]
        text = " + ".join(parts)
        return f"{text} ({', '.join(f'{k}={v}' for k, v in self.settings)})" if self.settings else text

    @property
    def train_key(self) -> RowKey:
        """The same row without post-hoc calibration (the row of the trained model itself)."""
        return RowKey(self.method, self.calibration, "", self.settings)


@dataclass(frozen=True)
class Cell:
    """Per-seed values of one table cell, as fractions (or plain numbers), with the seeds they come from and, where
    every run stored one, each run's bootstrap interval. A ``delta`` cell holds paired differences (signed); a
    ``note`` is shown instead of values (`NOT_APPLICABLE`: the split does not apply to the row)."""

    values: tuple[float, ...]
    seeds: tuple[int, ...] = ()
    intervals: tuple[tuple[float, float], ...] = ()
    delta: bool = False
    note: str = ""

    @property
    def text(self) -> str:
        if not self.values:
            return self.note
        text = format_cell(self.values)
        if self.delta:
            return text if text.startswith("-") else f"+{text}"
        return f"{text} {self.interval_text}" if self.interval_text else text

    @property
    def interval_text(self) -> str:
        """``[49.2, 52.8]``: the run's bootstrap interval in %, for a cell of one run that stored one."""
        if len(self.values) != 1 or len(self.intervals) != 1:
            return ""
        low, high = self.intervals[0]
        return f"[{100 * low:.1f}, {100 * high:.1f}]"

    @property
    def mean_text(self) -> str:
        """The mean as shown (one decimal, in %): what decides the best value of a column."""
        return f"{100 * statistics.fmean(self.values):.1f}" if self.values else ""


#: What a cell shows for a split that does not apply to its row (novel classes of a class-specific method).
NOT_APPLICABLE = "n/a"

DELTA = "Δ "  # prefix of a difference column's title: "Δ novel ECE" beside "novel ECE"

#: Which way is better for each report field (higher accuracy, lower calibration error).
HIGHER, LOWER = "higher", "lower"


def better_for(field_name: str) -> str:
    return HIGHER if field_name in ("accuracy", "macro_f1") else LOWER


@dataclass(frozen=True)
class Table:
    """Rows x columns of cells. ``better`` says per column which way is better ("" for difference columns, which
    are never marked); ``keys`` are the rows' `RowKey` (what differences to a method's ``none`` row need); ``notes``
    say why a row's `NOT_APPLICABLE` cells do not apply, shown under the table."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]
    better: tuple[str, ...] = ()
    keys: tuple[RowKey | None, ...] = ()
    notes: tuple[str, ...] = ()

    def best(self) -> set[tuple[int, int]]:
        """(row, column) of the best value of each column, as shown (ties at one decimal all marked)."""
        marked = set()
        for column, direction in enumerate(self.better):
            shown = {
                i: float(cells[column].mean_text) for i, (_, cells) in enumerate(self.rows) if cells[column].values
            }
            if direction and len(shown) > 1:
                top = (max if direction == HIGHER else min)(shown.values())
                marked |= {(i, column) for i, value in shown.items() if value == top}
        return marked

    def to_markdown(self, intervals: bool = True) -> str:
        """The table in Markdown, best values in bold (``intervals=False``: the values alone, for a terminal)."""
        best = self.best()
        lines = [f"| {self.title} | " + " | ".join(self.columns) + " |", "|---" * (len(self.columns) + 1) + "|"]
        for i, (label, cells) in enumerate(self.rows):
            texts = [c.text if intervals or c.delta or not c.values else format_cell(c.values) for c in cells]
            texts = [f"**{t}**" if (i, j) in best else t for j, t in enumerate(texts)]
            lines.append(f"| {label} | " + " | ".join(texts) + " |")
        return "\n".join(lines + ([""] if self.notes else []) + [f"{NOT_APPLICABLE}: {note}" for note in self.notes])

    def without_differences(self) -> Table:
        """The same table without its difference columns (what a terminal has room for)."""
        keep = [j for j, title in enumerate(self.columns) if not title.startswith(DELTA)]
        return Table(
            self.title,
            tuple(self.columns[j] for j in keep),
            tuple((label, tuple(cells[j] for j in keep)) for label, cells in self.rows),
            tuple(self.better[j] for j in keep) if self.better else (),
            self.keys,
            self.notes,
        )
