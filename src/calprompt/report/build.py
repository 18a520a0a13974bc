"""The report of a results store: tables (Markdown, CSV), reliability diagrams (PNG) and one HTML file."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calprompt._io import write_atomic
from calprompt.metrics import EvaluationReport
from calprompt.report.html import write_html_report
from calprompt.report.reliability import plot_reliability_diagrams
from calprompt.report.tables import Results, RowKey, Table, collect, paper_tables, tables_csv, tables_markdown

# Diagrams are drawn small: an HTML report of the paper's grid holds a few hundred of them.
_PANEL_SIZE, _DPI = (3.2, 4.0), 72


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    csv: Path
    html: Path
    figures: list[Path]
    tables: list[Table]
    n_runs: int
    n_failed: int


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def reliability_figures(results: Results, out_dir: Path) -> list[tuple[str, Path]]:
    """Per dataset, method (and other settings) and split: one panel per calibration and post-hoc variant.

    Each panel shows the run of the row's lowest seed (reliability bins are per run, not averaged over seeds).
    DAC variants are left out on base classes, where DAC is the identity.
    """
    groups: dict[tuple[str, str, tuple], list[RowKey]] = {}
    for key in results.rows:
        groups.setdefault((key.method, "", key.settings), []).append(key)
    figures = []
    for dataset in results.datasets:
        for (method, _, settings), keys in groups.items():
            for split in ("base", "novel"):
                reports, seeds = {}, set()
                for key in keys:
                    if split == "base" and "DAC" in key.posthoc:
                        continue
                    runs = results.cells[key].get(dataset, {})
                    seed = min((s for s, r in runs.items() if r.get(split)), default=None)
                    if seed is not None:
                        reports[key.label] = EvaluationReport.from_dict(runs[seed][split])
                        seeds.add(seed)
                if not reports:
                    continue
                name = RowKey(method, "none", "", settings).label
                seed_text = ", ".join(f"seed {s}" for s in sorted(seeds))
                caption = f"{dataset}: {name}, {split} classes ({seed_text})"
                path = out_dir / f"reliability-{_slug(dataset)}-{_slug(name)}-{split}.png"
                plot_reliability_diagrams(reports, path, title=caption, panel_size=_PANEL_SIZE, dpi=_DPI)
                figures.append((caption, path))
    return figures


def write_report(
    runs: Sequence[Any],
    out_dir: str | Path,
    *,
    failures: Sequence[Any] = (),
    title: str = "calprompt report",
    posthoc_all: bool = False,
) -> ReportFiles:
    """Write ``report.md``, ``report.csv``, ``report.html`` and ``figures/*.png`` for ``runs`` into ``out_dir``.

    ``runs`` are stored runs (``path``, ``config``, ``metrics``), ``failures`` recorded failures (``run_id``,
    ``error``); see :func:`calprompt.report.tables.collect` for how runs become rows.
    """
    if not runs:
        raise ValueError("Expected at least one finished run to report on, got none: run a sweep into the store first.")
    out = Path(out_dir)
    results = collect(runs, posthoc_all=posthoc_all)
    tables = paper_tables(results)
    markdown, csv = out / "report.md", out / "report.csv"
    adapted = adapted_notes(runs)
    notes = "".join(f"- {name}: {note}\n" for name, note in adapted)
    notes = f"\n### Adapted settings\n\n{notes}" if notes else ""
    text = f"# {title}\n\n{tables_markdown(tables)}{notes}"
    write_atomic(markdown, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_atomic(csv, lambda tmp: tmp.write_text(tables_csv(tables), encoding="utf-8"))
    figures = reliability_figures(results, out / "figures")
    configs = [(f"{run.path.name}: {_describe(run.config)}", run.config) for run in runs]
    failed = [(f"{failure.run_id}: {_describe(failure.config)}", failure.error) for failure in failures]
    html = write_html_report(
        out / "report.html", tables, figures, configs, title=title, failures=failed, adapted=adapted
    )
    return ReportFiles(markdown, csv, html, [path for _, path in figures], tables, len(runs), len(failures))


def adapted_notes(runs: Sequence[Any]) -> list[tuple[str, str]]:
    """(run name, note) for every setting a run recorded as adapted (``metrics.json["adapted"]``): a degenerate
    temperature fit and its fallback, fewer shots than asked, dropped images. Reports list them under the tables, so
    a row whose TS is no scaling is never read as a fitted result."""
    return [
        (f"{run.path.name}: {_describe(run.config)}", f"{key}: {why}")
        for run in runs
        for key, why in sorted(run.metrics.get("adapted", {}).items())
    ]


def _describe(config: dict[str, Any]) -> str:
    return f"{config['dataset']} / {config['method']} + {config['calibration']} / seed {config['seed']}"
