"""``calprompt train`` and ``calprompt eval``: thin wrappers over :mod:`calprompt.experiments.run`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from calprompt.cli.config_options import with_run_config_options
from calprompt.conventions import SPLIT_KEYS, TARGET_PREFIX, split_label

if TYPE_CHECKING:
    from rich.table import Table

console = Console()

CONFIG_FILE_OPTION = typer.Option(
    None, "--config", "-c", help="YAML file of run config fields (flags and --set override it)."
)
SET_OPTION = typer.Option(
    None, "--set", help="FIELD=VALUE or method.KEY=VALUE / calibration.KEY=VALUE, applied last (repeat)."
)
METHOD_OPTION = typer.Option(None, "--method-option", help="KEY=VALUE method setting.")
CALIBRATION_OPTION = typer.Option(None, "--calibration-option", help="KEY=VALUE constant.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def option_flags(method_option: list[str] | None, calibration_option: list[str] | None) -> dict[str, Any]:
    """``--method-option``/``--calibration-option`` KEY=VALUE pairs as flags (values stay text: the library converts
    each by the type of the setting it sets, so ``class_specific_context=False`` is a false boolean)."""
    from calprompt._parsing import parse_assignments

    return {
        "method_options": parse_assignments(method_option or [], "--method-option"),
        "calibration_options": parse_assignments(calibration_option or [], "--calibration-option"),
    }


def rich_progress(iterator: Iterator[Any], total: int, description: str) -> Iterator[Any]:
    """A progress bar per epoch (the training loop's ``progress`` hook)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for value in iterator:
            yield value
            progress.advance(task)


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """Accuracy and calibration (in %) of each evaluated split, raw and post-hoc."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("split", "acc %", "ECE %", "ACE %", "MCE %", "NLL", "n"):
        table.add_column(column, justify="left" if column == "split" else "right")
    rows = [(split_label(key), metrics.get(key)) for key in SPLIT_KEYS]
    rows += [
        (key.removeprefix(TARGET_PREFIX), report) for key, report in metrics.items() if key.startswith(TARGET_PREFIX)
    ]
    for label, report in rows:
        if report:
            table.add_row(
                label,
                f"{100 * report['accuracy']:.2f}",
                f"{100 * report['ece']:.2f}",
                f"{100 * report['adaptive_ece']:.2f}",
                f"{100 * report['mce']:.2f}",
                f"{report['nll']:.3f}",
                str(report["n"]),
            )
    return table


@with_run_config_options
def train(
    config_file: Path | None = CONFIG_FILE_OPTION,
    assignments: list[str] | None = SET_OPTION,
    method_option: list[str] | None = METHOD_OPTION,
    calibration_option: list[str] | None = CALIBRATION_OPTION,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory: resumed if interrupted, kept if finished, refused if another run's."
    ),
    force: bool = typer.Option(False, "--force", help="Replace the run in --out (finished or another run's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and its run id; run nothing."),
    quiet: bool = QUIET_OPTION,
    *,
    flags: dict[str, Any],
) -> None:
    """Train on the base classes, evaluate base and novel classes, write DIR/metrics.json.

    Every run config field is an option below; `-c FILE` reads them from YAML, `--set` overrides any of them.
    """
    from calprompt._validation import fail
    from calprompt.experiments.settings import run_config

    flags = {**flags, **option_flags(method_option, calibration_option)}
    config = run_config(config_file, flags, assignments or ())
    if dry_run:  # a run's checks before its run id (see `dry_run_record`)
        console.print_json(data=dry_run_record(config))
        return
    if out is None:
        fail("--out", "the run directory to write (e.g. --out runs/first), or pass --dry-run", None)
    from calprompt.experiments.runner import run_experiment

    result = run_experiment(config, out, progress=None if quiet else rich_progress, force=force)
    title = f"{config.method} + {config.calibration} on {config.dataset} (seed {config.seed})"
    console.print(metrics_table(result.metrics, title))
    console.print(f"Wrote {out / 'metrics.json'}")


def dry_run_record(config: Any) -> dict[str, Any]:
    """The resolved config and run id of ``config`` after the checks of `plan_run`: the data read and checked by
    the protocol, with what the run would adapt, where the data is on this machine (``"data"`` says why not
    otherwise). The machine checks (device, precision) are left to the run: a dry run is often made elsewhere."""
    from calprompt.experiments.identity import run_id
    from calprompt.experiments.runner import plan_run

    record = {**config.to_dict(), "run_id": run_id(config)}
    try:
        record["adapted"] = plan_run(config, machine=False).adapted
    except FileNotFoundError as error:  # data (or weights) that live elsewhere: the run checks them before writing
        record["data"] = f"not checked here: {str(error).splitlines()[0]}"
    return record


def evaluate(
    run: Path = typer.Option(..., "--run", help="A run directory written by `calprompt train`."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Evaluate on another dataset (all classes)."),
    root: Path | None = typer.Option(None, "--root", help="Data root for --dataset."),
    device: str | None = typer.Option(None, "--device", help="Override the run's device."),
) -> None:
    """Re-evaluate a finished run; with --dataset, evaluate its prompts on another dataset (distribution shift)."""
    from calprompt.experiments.runner import evaluate_run

    metrics = evaluate_run(run, dataset=dataset, root=str(root) if root else None, device=device)
    console.print(metrics_table(metrics, f"evaluation of {run}"))


@with_run_config_options(repeatable=("dataset", "seed"))
def grid(
    config_file: Path | None = CONFIG_FILE_OPTION,
    assignments: list[str] | None = SET_OPTION,
    method_option: list[str] | None = METHOD_OPTION,
    calibration_option: list[str] | None = CALIBRATION_OPTION,
    run: list[str] | None = typer.Option(
        None, "--run", "-r", help="METHOD[:CALIBRATION] rows (repeat) [default: zeroshot, coop:none, coop:ours]."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Grid directory (re-running skips finished runs)."),
    quiet: bool = QUIET_OPTION,
    *,
    flags: dict[str, Any],
) -> None:
    """Run a grid of datasets x methods x seeds (skipping finished runs) and print mean ± std tables.

    A grid is a sweep (`calprompt sweep`) of --dataset x --run x --seed over the other settings, run one after the
    other into the results store OUT; every run config field is an option below, as for `train`.
    """
    from calprompt.cli.sweep import run_with_progress
    from calprompt.experiments.executors import SerialExecutor
    from calprompt.experiments.settings import merged_settings
    from calprompt.experiments.sweep import grid_spec, parse_runs, plan_sweep
    from calprompt.report.tables import grid_tables

    datasets, seeds = flags.pop("dataset", ["toy"]), flags.pop("seed", [1, 2, 3])
    if run and ({"method", "calibration"} & set(flags)):
        raise ValueError("Pass rows as --run METHOD:CALIBRATION, or one row as --method/--calibration, not both.")
    if run is None and ({"method", "calibration"} & set(flags)):
        run = [f"{flags.pop('method', 'coop')}:{flags.pop('calibration', 'ours')}"]
    base = merged_settings(config_file, {**flags, **option_flags(method_option, calibration_option)}, assignments or ())
    spec = grid_spec(base, datasets, parse_runs(run or ["zeroshot", "coop:none", "coop:ours"]), seeds)
    plan = plan_sweep(spec, out)
    summary = run_with_progress(plan, SerialExecutor(), quiet=quiet)
    for label in summary.elsewhere:
        console.print(f"running elsewhere (left out of the tables) {label}", highlight=False, soft_wrap=True)
    for label, error in summary.errors.items():
        console.print(f"FAILED {label}: {error}", highlight=False, soft_wrap=True)
    if summary.failed:
        raise typer.Exit(code=1)
    tables = grid_tables([stored for run in plan.runs if (stored := _stored(run)) is not None])
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(tables, encoding="utf-8")
    console.print(tables)
    console.print(f"Wrote {out / 'tables.md'}")


def _stored(run: Any) -> Any:
    """The finished run of a planned one (``None`` while another process still runs it)."""
    from calprompt.experiments.rundir import read_finished
    from calprompt.experiments.store import read_stored_run

    metrics = read_finished(run.run_dir)
    return None if metrics is None else read_stored_run(run.run_dir, metrics)


def upgrade(
    paths: list[Path] = typer.Argument(..., help="Finished run directories, or results stores (every run in them)."),
) -> None:
    """Write run.json into runs written before run records, so that `predict` and `eval --dataset` need nothing but
    the directory and the backbone's weights. Reads each run's data once: run it where the data is."""
    from calprompt.experiments.runner import upgrade_run
    from calprompt.experiments.store import RUNS_DIR

    for path in paths:
        folders = sorted(p for p in (path / RUNS_DIR).iterdir() if p.is_dir()) if (path / RUNS_DIR).is_dir() else [path]
        for folder in folders:
            done = upgrade_run(folder)
            console.print(
                f"{folder}: {'run record written' if done else 'has its run record'}", highlight=False, soft_wrap=True
            )
