"""Root typer application; sub-command groups are attached here explicitly (no import side effects)."""

from __future__ import annotations

import logging

import typer

from calprompt import __version__

app = typer.Typer(
    name="calprompt",
    help="Calibrated prompt tuning of CLIP-like vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"calprompt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress at INFO level."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Calibrated prompt tuning of CLIP-like vision-language models."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _attach() -> None:
    """Attach the command groups explicitly, so `calprompt --help` lists everything without import side effects."""
    from calprompt.cli.datasets import datasets_app
    from calprompt.cli.demo import demo
    from calprompt.cli.predict import predict
    from calprompt.cli.report import report
    from calprompt.cli.run import evaluate, grid, train
    from calprompt.cli.sweep import sweep
    from calprompt.cli.toy import toy_app

    app.command("demo")(demo)
    app.command("train")(train)
    app.command("eval")(evaluate)
    app.command("grid")(grid)
    app.command("sweep")(sweep)
    app.command("report")(report)
    app.command("predict")(predict)
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(toy_app, name="toy")


_attach()
