"""``calprompt demo``: the whole pipeline on the embedded toy world in a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown

console = Console()


def demo(
    out: Path = typer.Option(Path("outputs/demo"), "--out", "-o", help="The demo's results store and report."),
    quick: bool = typer.Option(False, "--quick", help="Zero-shot vs CoOp vs CoOp + ours, 1 shot (under a minute)."),
    executor: str = typer.Option("pool", "--executor", "-e", help="serial, pool (local processes) or ray."),
    workers: int | None = typer.Option(None, "--workers", help="Processes of the pool executor."),
    set_: list[str] | None = typer.Option(None, "--set", help="KEY=VALUE for every run, e.g. seed=2 or epochs=5."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Base-to-novel on the toy world: every method x none / ours / baselines, post-hoc TS and DAC, then the report."""
    from calprompt._parsing import parse_assignments
    from calprompt.cli.sweep import run_with_progress
    from calprompt.experiments.executors import make_executor
    from calprompt.experiments.sweep import demo_report, plan_demo

    plan = plan_demo(out, quick=quick, overrides=parse_assignments(set_ or [], "--set"))
    for note in plan.notes:
        console.print(f"note: {note}")
    console.print(f"Demo sweep on the toy world: {len(plan.runs)} runs ({len(plan.finished)} finished) in {out}/")
    summary = run_with_progress(plan, make_executor(executor, workers=workers), quiet=quiet)
    result = demo_report(plan, summary)
    console.print(Markdown(result.table))
    console.print(f"runs: done {summary.done}, failed {summary.failed}, skipped {summary.skipped} (finished before)")
    console.print(f"HTML report: {result.report.html}", soft_wrap=True)
    console.print(f"Tables: {result.report.markdown}, {result.report.csv}", soft_wrap=True)
    console.print(f"{len(result.report.figures)} PNG figures in {result.report.html.parent / 'figures'}")
    if summary.failed:
        raise typer.Exit(code=1)
