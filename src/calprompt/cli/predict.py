"""``calprompt predict``: classes and calibrated confidences of images from a saved run (see experiments.predict)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def predict(
    images: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    run: Path = typer.Option(..., "--run", help="A finished run directory (e.g. STORE/runs/<run id>)."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated new class names (default: the run's)."),
    classes_file: Path | None = typer.Option(None, "--classes-file", help="New class names, one per line."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="How many classes to list per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str | None = typer.Option(None, "--device", help="Override the run's device."),
) -> None:
    """Predicted class, calibrated confidence (TS; TS + DAC for new class names) and the top-k per image."""
    from calprompt._validation import fail
    from calprompt.experiments.predict import predict_images

    if classes and classes_file:
        fail("--classes / --classes-file", "one of the two (drop the other)", "both")
    names = None
    if classes:
        names = [name.strip() for name in classes.split(",") if name.strip()]
    elif classes_file:
        names = [line.strip() for line in classes_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = predict_images(run, images, classnames=names, top_k=top_k, device=device)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        table = Table(title=f"{len(result.predictions)} images, {len(result.classnames)} classes, {result.calibration}")
        for column in ("image", "class", "confidence %", f"top {top_k}"):
            table.add_column(column, justify="right" if column == "confidence %" else "left")
        for p in result.predictions:
            top = ", ".join(f"{name} {100 * prob:.1f}" for name, prob in p.top_k)
            table.add_row(p.path, p.label, f"{100 * p.confidence:.1f}", top)
        console.print(table)
        for path, error in result.errors:
            console.print(f"could not read {path}: {error}", highlight=False, soft_wrap=True)
    if result.errors:
        raise typer.Exit(code=2 if not result.predictions else 1)
