"""Root typer application; sub-command groups are attached here explicitly (no import side effects)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click
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


# Errors that come from the user's input or files (a bad setting, a missing or corrupt file, a busy directory):
# the CLI prints their message alone and exits with 1. Anything else is a bug and says so.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError, EOFError)
_show_tracebacks = False
# typer vendors its own click: a command may raise either family's usage errors (typer.BadParameter, click's).
_USAGE_ERRORS: tuple[type[Exception], ...] = (typer.TyperException, click.ClickException)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress at INFO level (and show tracebacks)."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Calibrated prompt tuning of CLIP-like vision-language models."""
    global _show_tracebacks
    _show_tracebacks = debug or verbose
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``command``; an error becomes one message on stderr and exit code 1 (2 for a bug), with no traceback
    unless ``--debug`` or ``-v`` was given."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except _USAGE_ERRORS as error:
            # A usage error raised by a command itself (not by option parsing): one line and exit 1, like any other
            # user error, never click's usage box with exit 2 nor "Internal error".
            if _show_tracebacks:
                raise
            message = error.format_message() if hasattr(error, "format_message") else str(error)
            typer.echo(f"Error: {' '.join(message.split())}", err=True)
            raise typer.Exit(code=1) from None
        except Exception as error:
            if _show_tracebacks:
                raise
            if isinstance(error, USER_ERRORS):
                typer.echo(f"Error: {error}", err=True)
                raise typer.Exit(code=1) from None
            typer.echo(
                f"Internal error ({type(error).__name__}: {error}). Rerun with --debug for the traceback and please "
                "report it.",
                err=True,
            )
            raise typer.Exit(code=2) from None

    return wrapper


def _attach() -> None:
    """Attach the command groups explicitly, so `calprompt --help` lists everything without import side effects."""
    from calprompt.cli.datasets import datasets_app
    from calprompt.cli.demo import demo
    from calprompt.cli.predict import predict
    from calprompt.cli.report import report
    from calprompt.cli.run import evaluate, grid, train, upgrade
    from calprompt.cli.sweep import sweep
    from calprompt.cli.toy import toy_app

    app.command("demo")(friendly_errors(demo))
    app.command("train")(friendly_errors(train))
    app.command("eval")(friendly_errors(evaluate))
    app.command("grid")(friendly_errors(grid))
    app.command("sweep")(friendly_errors(sweep))
    app.command("report")(friendly_errors(report))
    app.command("predict")(friendly_errors(predict))
    app.command("upgrade")(friendly_errors(upgrade))
    for group in (datasets_app, toy_app):
        for info in group.registered_commands:
            info.callback = friendly_errors(info.callback)
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(toy_app, name="toy")


_attach()
