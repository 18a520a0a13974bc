"""``calprompt train`` and ``calprompt eval``: thin wrappers over :mod:`calprompt.experiments.run`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from calprompt.cli.config_options import with_run_config_options
from calprompt.experiments.config import RunConfig

if TYPE_CHECKING:
    from rich.table import Table

console = Console()

ROWS = (
    ("base", "base"),
    ("base+ts", "base + TS"),
    ("novel", "novel"),
    ("novel+ts", "novel + TS"),
    ("novel+dac", "novel + DAC"),
    ("novel+ts+dac", "novel + TS + DAC"),
)


def parse_options(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """``["n_ctx=16", "ctx_init=null"]`` -> ``{"n_ctx": "16", "ctx_init": "null"}``.

    Values stay text here: the library converts each by the type of the field it sets
    (`calprompt.experiments.options`), so ``class_specific_context=False`` is a false boolean.
    """
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"Expected KEY=VALUE, got {pair!r}.", param_hint=flag)
        options[key.strip()] = value
    return options


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
    rows = [(label, metrics.get(key)) for key, label in ROWS]
    rows += [(key.removeprefix("eval:"), report) for key, report in metrics.items() if key.startswith("eval:")]
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
    config_file: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file of run config fields (flags and --set override it)."
    ),
    assignments: list[str] | None = typer.Option(
        None, "--set", help="FIELD=VALUE or method.KEY=VALUE / calibration.KEY=VALUE, applied last (repeat)."
    ),
    method_option: list[str] | None = typer.Option(None, "--method-option", help="KEY=VALUE method setting."),
    calibration_option: list[str] | None = typer.Option(None, "--calibration-option", help="KEY=VALUE constant."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory: resumed if interrupted, kept if finished, refused if another run's."
    ),
    force: bool = typer.Option(False, "--force", help="Replace the run in --out (finished or another run's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and its run id; run nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    *,
    flags: dict[str, Any],
) -> None:
    """Train on the base classes, evaluate base and novel classes, write DIR/metrics.json.

    Every run config field is an option below; `-c FILE` reads them from YAML, `--set` overrides any of them.
    """
    from calprompt.experiments.options import typed_run_config
    from calprompt.experiments.settings import build_run_config

    flags = {
        **flags,
        "method_options": parse_options(method_option, "--method-option"),
        "calibration_options": parse_options(calibration_option, "--calibration-option"),
    }
    config = typed_run_config(build_run_config(config_file, flags, assignments or ()).resolved())
    if dry_run:
        console.print_json(data={**config.to_dict(), "run_id": config.run_id()})
        return
    if out is None:
        raise typer.BadParameter("Missing option: the run directory to write.", param_hint="--out")
    from calprompt.experiments.run import run_experiment

    result = run_experiment(config, out, progress=None if quiet else rich_progress, force=force)
    title = f"{config.method} + {config.calibration} on {config.dataset} (seed {config.seed})"
    console.print(metrics_table(result.metrics, title))
    console.print(f"Wrote {out / 'metrics.json'}")


def evaluate(
    run: Path = typer.Option(..., "--run", help="A run directory written by `calprompt train`."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Evaluate on another dataset (all classes)."),
    root: Path | None = typer.Option(None, "--root", help="Data root for --dataset."),
    device: str | None = typer.Option(None, "--device", help="Override the run's device."),
) -> None:
    """Re-evaluate a finished run; with --dataset, evaluate its prompts on another dataset (distribution shift)."""
    from calprompt.experiments.run import evaluate_run

    metrics = evaluate_run(run, dataset=dataset, root=str(root) if root else None, device=device)
    console.print(metrics_table(metrics, f"evaluation of {run}"))


def grid(
    dataset: list[str] = typer.Option(["toy"], "--dataset", "-d", help="Datasets (repeat the option)."),
    run: list[str] = typer.Option(
        ["zeroshot", "coop:none", "coop:ours"], "--run", "-r", help="METHOD[:CALIBRATION] rows (repeat)."
    ),
    seeds: list[int] = typer.Option([1, 2, 3], "--seed", help="Seeds (repeat the option)."),
    root: Path | None = typer.Option(None, "--root", help="Data root (CoOp layout)."),
    shots: int = typer.Option(16, "--shots"),
    backbone: str = typer.Option("toy", "--backbone"),
    pretrained: str | None = typer.Option(None, "--pretrained"),
    recipe: str = typer.Option("paper", "--recipe"),
    device: str = typer.Option("cpu", "--device"),
    precision: str = typer.Option("fp32", "--precision"),
    out: Path = typer.Option(..., "--out", "-o", help="Grid directory (re-running skips finished runs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a grid of datasets x methods x seeds (skipping finished runs) and print mean ± std tables."""
    from calprompt.experiments.grid import grid_tables, parse_entries, run_grid

    base = RunConfig(
        root=str(root) if root else None,
        shots=shots,
        backbone=backbone,
        pretrained=pretrained,
        recipe=recipe,
        device=device,
        precision=precision,
    )
    results = run_grid(base, dataset, parse_entries(run), seeds, out, progress=None if quiet else rich_progress)
    tables = grid_tables(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(tables, encoding="utf-8")
    console.print(tables)
    console.print(f"Wrote {out / 'tables.md'}")
