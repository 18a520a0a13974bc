"""The report of a store: tables (Markdown, CSV), headline figures and reliability grids (PNG), one HTML file."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calprompt._io import write_atomic
from calprompt.conventions import BASE, NOVEL
from calprompt.metrics import EvaluationReport
from calprompt.report.beside_published import beside_published, load_published
from calprompt.report.headline import headline_figures
from calprompt.report.html import PageParts, write_html_report
from calprompt.report.reliability import plot_reliability_diagrams
from calprompt.report.tables import Results, RowKey, Table, collect, paper_tables, tables_csv, tables_markdown

# Reliability grids: at most 4 panels a row of 290 x 360 px (1,160 px a row: within a 1,280 px page at 100 % zoom).
_PANEL_SIZE, _DPI, _COLUMNS = (2.9, 3.6), 100, 4


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
                plot_reliability_diagrams(
                    reports, path, title=caption, panel_size=_PANEL_SIZE, dpi=_DPI, columns=_COLUMNS
                )
                figures.append((caption, path))
    return figures


def write_report(
    runs: Sequence[Any],
    out_dir: str | Path,
    *,
    failures: Sequence[Any] = (),
    title: str = "calprompt report",
    posthoc_all: bool = False,
    published: str | None = None,
    notes: Sequence[str] = (),
) -> ReportFiles:
    """Write ``report.md``, ``report.csv``, ``report.html`` and ``figures/*.png`` for ``runs`` into ``out_dir``.

    ``runs`` are stored runs (``path``, ``config``, ``metrics``), ``failures`` recorded failures (``run_id``,
    ``error``); see :func:`calprompt.report.tables.collect` for how runs become rows. ``published`` names a shipped
    published table (``paper``) to set beside the measured rows (`calprompt.report.beside_published`); ``notes``
    are lines the report opens with (e.g. what a demo leaves out).
    """
    if not runs:
        raise ValueError("Expected at least one finished run to report on, got none: run a sweep into the store first.")
    out = Path(out_dir)
    results = collect(runs, posthoc_all=posthoc_all)
    tables = paper_tables(results)
    extra, extra_notes = [], []
    if published is not None:
        table, extra_notes = beside_published(results, load_published(published), runs)
        extra = [table]
    notes = [*notes, *interval_notes(runs)]
    markdown, csv = out / "report.md", out / "report.csv"
    adapted = adapted_notes(runs)
    write_atomic(
        markdown,
        lambda tmp: tmp.write_text(_markdown(title, notes, tables, extra, extra_notes, adapted), encoding="utf-8"),
    )
    write_atomic(csv, lambda tmp: tmp.write_text(tables_csv([*tables, *extra]), encoding="utf-8"))
    headline = headline_figures(results, out / "figures")
    figures = reliability_figures(results, out / "figures")
    groups: dict[str, list[tuple[str, Path]]] = {}
    for scope, caption, path in headline:
        groups.setdefault(scope.title, []).append((caption, path))
    parts = PageParts(
        headline=list(groups.items()),
        reliability=figures,
        published=extra,
        published_notes=extra_notes,
        failures=[(f"{failure.run_id}: {_describe(failure.config)}", failure.error) for failure in failures],
        adapted=adapted,
        configs=[(f"{run.path.name}: {_describe(run.config)}", run.config) for run in runs],
        notes=list(notes),
    )
    html = write_html_report(out / "report.html", tables, parts, title=title)
    pngs = [path for *_, path in headline] + [path for _, path in figures]
    return ReportFiles(markdown, csv, html, pngs, tables, len(runs), len(failures))


def _markdown(
    title: str,
    notes: Sequence[str],
    tables: Sequence[Table],
    extra: Sequence[Table],
    extra_notes: Sequence[str],
    adapted: Sequence[tuple[str, str]],
) -> str:
    """report.md: the notes, every table, the published comparison with its notes, the adapted settings."""
    text = f"# {title}\n\n" + "".join(f"{note}\n\n" for note in notes) + tables_markdown(tables)
    for table in extra:
        lines = "".join(f"- {note}\n" for note in extra_notes)
        text += f"\n### {table.title}\n\n{lines}\n{table.to_markdown()}\n"
    if adapted:
        text += "\n### Adapted settings\n\n" + "".join(f"- {name}: {note}\n" for name, note in adapted)
    return text


def interval_notes(runs: Sequence[Any]) -> list[str]:
    """How the runs' bootstrap intervals were computed (resamples and level, as each run's metrics.json records
    them), so an interval from fewer resamples (the demo's 200) is never read as one from a run's default 1,000."""
    settings = {
        (report["intervals"]["n_resamples"], report["intervals"]["level"])
        for run in runs
        for report in (run.metrics.get(BASE), run.metrics.get(NOVEL))
        if isinstance(report, dict) and report.get("intervals")
    }
    if not settings:
        return ["No run holds bootstrap intervals: cells show the values alone."]
    listed = "; ".join(f"{100 * level:.0f}% from {n} resamples" for n, level in sorted(settings))
    novel = any(isinstance(run.metrics.get(NOVEL), dict) for run in runs)
    return [f"Bootstrap intervals (percentile, per run, raw {'base and novel test' if novel else 'test'}): {listed}."]


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
