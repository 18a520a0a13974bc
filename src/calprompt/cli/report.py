"""``calprompt report STORE``: paper-style tables, reliability diagrams and one HTML file (thin: see report.build)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown

console = Console()


def report(
    store: Path = typer.Argument(..., help="A results store written by `calprompt sweep` (or `grid`)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where the report goes (default: STORE/report)."),
    posthoc_all: bool = typer.Option(
        False, "--posthoc-all", help="TS / DAC rows for every calibration, not only none."
    ),
    title: str = typer.Option("calprompt report", "--title", help="Title of the Markdown and HTML report."),
    published: str | None = typer.Option(
        None, "--published", help="Set a shipped published table beside the measured rows: paper (the seed paper)."
    ),
) -> None:
    """Write report.md, report.csv, report.html and figures/*.png from every finished run of STORE."""
    from calprompt._validation import fail
    from calprompt.experiments.store import ResultsStore, iter_failures
    from calprompt.report.build import write_report

    if not store.is_dir():
        fail("STORE", "a results store folder (from `calprompt sweep --store` or `calprompt grid --out`)", str(store))
    results = ResultsStore(store)
    files = write_report(
        list(results.iter_runs()),
        out or store / "report",
        failures=list(iter_failures(results.root)),
        title=title,
        posthoc_all=posthoc_all,
        published=published,
    )
    console.print(Markdown(files.tables[0].without_differences().to_markdown(intervals=False)))
    console.print(
        f"{files.n_runs} runs" + (f", {files.n_failed} failed (listed in the HTML)" if files.n_failed else "")
    )
    for path in (files.markdown, files.csv, files.html):
        console.print(f"Wrote {path}")
    console.print(f"Wrote {len(files.figures)} figures (headline, reliability) in {files.html.parent / 'figures'}")
