"""Each row's difference to its method's ``none`` row: where an objective or a post-hoc calibrator moved a method.

Differences are paired by seed (row at seed s minus ``none`` at seed s, over the seeds both rows have), so their mean
is the difference of the two rows' means whenever the rows share their seeds, and their spread is the spread of the
paired differences, not of either row. They are in percentage points, signed, and never marked as best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from calprompt.report.cells import DELTA, Cell, RowKey, Table


def baseline_key(key: RowKey) -> RowKey:
    """The row a row is compared with: the same method and settings, no objective, no post-hoc calibrator."""
    return RowKey(key.method, "none", "", key.settings)


def paired_difference(cell: Cell, baseline: Cell) -> Cell:
    """``cell - baseline`` per seed both hold (an empty delta cell when they share none)."""
    own, base = dict(zip(cell.seeds, cell.values, strict=True)), dict(zip(baseline.seeds, baseline.values, strict=True))
    seeds = tuple(seed for seed in own if seed in base)
    return Cell(tuple(own[seed] - base[seed] for seed in seeds), seeds, delta=True)


def with_differences(table: Table, columns: Sequence[int] | None = None) -> Table:
    """``table`` with a "Δ <column>" column after each of ``columns`` (default: all): each row minus its method's
    ``none`` row. The ``none`` rows themselves, and rows whose ``none`` row is not in the table, get empty cells."""
    chosen = set(range(len(table.columns)) if columns is None else columns)
    by_key = {key: cells for key, (_, cells) in zip(table.keys, table.rows, strict=True) if key is not None}
    rows = []
    for key, (label, cells) in zip(table.keys, table.rows, strict=True):
        baseline = by_key.get(baseline_key(key)) if key is not None and key != baseline_key(key) else None
        out = []
        for j, cell in enumerate(cells):
            out.append(cell)
            if j in chosen:
                out.append(paired_difference(cell, baseline[j]) if baseline else Cell((), delta=True))
        rows.append((label, tuple(out)))
    titles, better = [], []
    for j, (title, direction) in enumerate(zip(table.columns, table.better, strict=True)):
        titles.append(title)
        better.append(direction)
        if j in chosen:
            titles.append(f"{DELTA}{title}")
            better.append("")
    return replace(table, columns=tuple(titles), rows=tuple(rows), better=tuple(better))
