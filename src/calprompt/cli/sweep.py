"""``calprompt sweep FILE --store DIR``: plan a sweep against a results store, then run it (see experiments.sweep)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def sweep(
    file: str = typer.Argument(..., help="A sweep YAML file, or the name of a shipped one (e.g. paper-base2novel)."),
    store: Path = typer.Option(..., "--store", "-s", help="The results store (runs are skipped when finished there)."),
    executor: str = typer.Option("serial", "--executor", "-e", help="serial, pool (local processes) or ray."),
    workers: int | None = typer.Option(None, "--workers", help="Processes of the pool executor (default: cores / 2)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster: auto or HOST:PORT (default: local)."),
    set_: list[str] | None = typer.Option(None, "--set", help="KEY=VALUE base field for every run, e.g. root=$DATA."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs, what is missing on disk, what is finished."),
    force: bool = typer.Option(
        False, "--force", help="Run every run again, finished ones included, replacing what the store has for it."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run every unfinished run of a sweep; failures are recorded in the store and the sweep goes on."""
    from calprompt._parsing import parse_assignments
    from calprompt.experiments.executors import make_executor
    from calprompt.experiments.settings import preflight
    from calprompt.experiments.sweep import iter_plan_lines, load_sweep, plan_sweep

    spec = load_sweep(file).with_base(parse_assignments(set_ or [], "--set"))
    plan = plan_sweep(spec, store)
    for note in plan.notes:
        console.print(f"note: {note}")
    to_run = f"{len(plan.runs)} to run (--force)" if force else f"{len(plan.pending)} to run"
    console.print(
        f"Sweep {spec.name!r}: {len(plan.runs)} runs, {len(plan.finished)} finished in {plan.store.root}, {to_run}"
        + (f" ({len(plan.failed_before)} failed before)" if plan.failed_before else ""),
        soft_wrap=True,
    )
    if dry_run:
        for line in iter_plan_lines(plan):
            console.print(line, highlight=False, soft_wrap=True)
        problems = preflight(run.config for run in plan.pending)
        console.print("Missing on disk:" if problems else "Data and weights: nothing missing for the runs to run.")
        for problem in problems:
            console.print(f"  {problem}", highlight=False, soft_wrap=True)
        return
    summary = run_with_progress(
        plan, make_executor(executor, workers=workers, address=address), quiet=quiet, force=force
    )
    console.print(
        f"done {summary.done}, failed {summary.failed}, skipped {summary.skipped} (finished before)"
        + (f", {len(summary.elsewhere)} running elsewhere" if summary.elsewhere else ""),
        soft_wrap=True,
    )
    for label in summary.elsewhere:
        console.print(f"  running elsewhere (skipped) {label}", highlight=False, soft_wrap=True)
    for label, error in summary.errors.items():
        console.print(f"  FAILED {label}: {error}", highlight=False, soft_wrap=True)
    console.print(f"Report: calprompt report {plan.store.root}")
    if summary.failed:
        raise typer.Exit(code=1)


def run_with_progress(plan, executor, *, quiet: bool = False, force: bool = False):
    """Run ``plan`` with one progress bar for the whole sweep: runs done / failed / skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from calprompt.experiments.sweep import run_sweep

    if quiet:
        return run_sweep(plan, executor, force=force)
    columns = (
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("done {task.fields[done]} · failed {task.fields[failed]} · skipped {task.fields[skipped]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        skipped = 0 if force else len(plan.finished)
        bar = progress.add_task("sweep", total=len(plan.runs), completed=skipped, done=0, failed=0, skipped=skipped)

        def advance(_outcome, summary) -> None:
            progress.update(bar, advance=1, done=summary.done, failed=summary.failed)

        return run_sweep(plan, executor, on_outcome=advance, force=force)
