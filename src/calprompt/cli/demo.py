"""``calprompt demo``: the whole pipeline on the embedded toy world in a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown

console = Console()


def demo(
    out: Path = typer.Option(Path("outputs/demo"), "--out", "-o", help="Where runs, table and figures go."),
    dataset: str = typer.Option("toy", "--dataset", "-d", help="A toy dataset (or any dataset with --backbone)."),
    seed: int = typer.Option(1, "--seed", help="Run seed."),
    recipe: str = typer.Option("fast", "--recipe", help="fast (minutes) or paper (the full schedule)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Zero-shot CLIP vs CoOp vs CoOp + ours: accuracy, ECE and reliability diagrams on base and novel classes."""
    from calprompt.cli.run import rich_progress
    from calprompt.experiments.demo import run_demo

    console.print(f"Running zero-shot CLIP, CoOp and CoOp + ours on {dataset!r} (seed {seed}, {recipe} recipe)...")
    result = run_demo(out, dataset=dataset, seed=seed, recipe=recipe, progress=None if quiet else rich_progress)
    console.print(Markdown(result.table))
    for figure in result.figures:
        console.print(f"Wrote {figure}")
    console.print(f"Runs, metrics.json files and table.md are in {out}/")
