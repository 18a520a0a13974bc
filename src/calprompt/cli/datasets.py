"""``calprompt datasets``: list the known datasets and check a data root (thin: the work is in calprompt.data)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # the data package imports torch: loaded inside the commands, so `--help` stays fast
    from calprompt.data import DatasetCheck

datasets_app = typer.Typer(
    name="datasets",
    help="Datasets in the CoOp/Dassl layout: list them, check a data root.",
    no_args_is_help=True,
    add_completion=False,
)


def _count(check: DatasetCheck, split: str) -> str:
    if check.counts is None:
        return "-"
    if split == "val" and check.val_is_test:
        return "= test"
    return f"{check.counts[split]:,}"


def _status(check: DatasetCheck) -> str:
    if check.missing:
        return "MISSING"
    if check.error is not None:
        return "ERROR"
    if check.missing_images or check.unreadable_images:
        return "BAD IMAGES"
    if check.untrained_classes:
        return "BAD CLASSES"
    return "OK"


def _details(check: DatasetCheck) -> list[str]:
    lines = [f"{check.name} ({check.title}) under {check.root}: {_status(check)}"]
    if not check.root.exists():
        lines.append(f"  the data root {check.root} does not exist")
    lines += [f"  found: {path}" for path in check.found]
    lines += [f"  missing: {expected.describe()}" for expected in check.missing]
    if check.error is not None:
        lines.append(f"  error: {check.error}")
    listings = (
        ("missing image(s)", check.missing_images, ""),
        ("unreadable image(s)", check.unreadable_images, ""),
        ("skipped file(s)", check.skipped_files, " (not read as images)"),
        ("class(es) without training images", check.untrained_classes, " (training refuses them)"),
        ("class(es) without test images", check.untested_classes, " (evaluated nowhere)"),
    )
    for label, paths, why in listings:
        if paths:
            lines.append(f"  {len(paths)} {label}{why}, e.g.:")
            lines += [f"    {path}" for path in paths[:5]]
    if check.ok and check.matches_published is False:
        sizes = "/".join("-" if size is None else f"{size:,}" for size in check.expected_sizes or ())
        lines.append(
            f"  note: published train/val/test sizes are {sizes} with {check.expected_classes} classes; "
            "results will not be comparable with published numbers."
        )
    if not check.ok and check.download:
        lines += ["  How to get it (CoOp's DATASETS.md):", check.download]
    return lines


@datasets_app.command("check")
def check(
    names: list[str] | None = typer.Argument(None, help="Datasets to check; default: every published benchmark."),
    root: Path = typer.Option(..., "--root", help="Data root holding the dataset folders (CoOp's $DATA)."),
    verify_images: bool = typer.Option(False, "--verify-images", help="Also decode every image (slow)."),
) -> None:
    """Report per dataset the files found and missing (exact paths), how to get them, and items per split."""
    from rich.console import Console
    from rich.table import Table

    from calprompt.data import check_dataset, get_dataset_spec, list_datasets

    if names:
        specs = [get_dataset_spec(name) for name in names]  # an unknown name: one line, with the closest known
    else:
        specs = [spec for spec in map(get_dataset_spec, list_datasets()) if spec.benchmark]
    checks = [check_dataset(spec.name, root, verify_images=verify_images) for spec in specs]

    table = Table(title=f"Datasets under {root}")
    for column in ("dataset", "status", "train", "val", "test", "classes"):
        table.add_column(column, justify="left" if column in ("dataset", "status") else "right")
    for result in checks:
        classes = "-" if result.num_classes is None else str(result.num_classes)
        table.add_row(result.name, _status(result), *(_count(result, s) for s in ("train", "val", "test")), classes)
    Console(soft_wrap=True).print(table)
    for result in checks:
        typer.echo("\n".join(_details(result)))
    if not all(result.ok for result in checks):
        raise typer.Exit(code=1)


@datasets_app.command("list")
def list_command() -> None:
    """List every registered dataset with its aliases and zero-shot template."""
    from calprompt.data import get_dataset_spec, list_datasets

    for name in list_datasets():
        spec = get_dataset_spec(name)
        aliases = f" (also: {', '.join(spec.aliases)})" if spec.aliases else ""
        kind = "test only" if spec.test_only else ("no files" if not spec.needs_root else "train/val/test")
        typer.echo(f"{name}{aliases}: {spec.title}, {kind}, template {spec.template!r}")
