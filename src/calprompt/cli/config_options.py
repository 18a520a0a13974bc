"""Command-line options derived from the `RunConfig` dataclass: one option per field, never mirrored by hand.

Each field becomes ``--field-name`` (or the flags in its metadata) with the field's help; booleans become
``--name/--no-name``. Every derived option defaults to "not given", so a config file's value is only overridden by
a flag the user actually typed (see `calprompt.experiments.settings` for the precedence).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer

from calprompt.experiments.config import RunConfig, type_hints

# Fields set through their own repeatable options (--method-option KEY=VALUE, --calibration-option KEY=VALUE).
GROUPED = ("method_options", "calibration_options")


def _base_type(hint: Any) -> Any:
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) else hint


def run_config_parameters(repeatable: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per `RunConfig` field (but the option groups), each a typer option defaulting to None;
    the ``repeatable`` fields take a list (``--seed 1 --seed 2``: the axes of a grid)."""
    hints = type_hints(RunConfig)
    parameters = []
    for spec in dataclasses.fields(RunConfig):
        if spec.name in GROUPED:
            continue
        kind = _base_type(hints[spec.name])
        if typing.get_origin(kind) in (tuple, list):
            kind = str  # a list field takes text (JSON, or comma-separated), converted by the field's type
        flag = spec.name.replace("_", "-")
        flags = spec.metadata.get("flags") or (f"--{flag}",)
        if kind is bool:
            flags = (f"--{flag}/--no-{flag}",)
        default = spec.default if spec.default is not dataclasses.MISSING else None
        shown = spec.metadata.get("shown") or ("the recipe's / loop's" if default is None else repr(default))
        text = spec.metadata.get("help", "")
        if spec.name in repeatable:
            kind, text = list[kind], f"{text} Repeat the option for several."
        option = typer.Option(None, *flags, help=f"{text} [default: {shown}]")
        parameters.append(
            inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)
        )
    return parameters


def with_run_config_options(
    command: Callable[..., Any] | None = None, *, repeatable: tuple[str, ...] = ()
) -> Callable[..., Any]:
    """Give ``command`` an option per `RunConfig` field; the ones given arrive as its ``flags`` dict argument
    (``repeatable`` fields as lists; used as ``@with_run_config_options(repeatable=(...))``)."""
    if command is None:
        return functools.partial(with_run_config_options, repeatable=repeatable)
    hints = typing.get_type_hints(command)
    own = [
        parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
        for parameter in inspect.signature(command).parameters.values()
        if parameter.name != "flags"
    ]
    derived = run_config_parameters(repeatable)
    names = [parameter.name for parameter in derived]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        flags = {name: value for name in names if (value := kwargs.pop(name)) not in (None, [])}
        return command(flags=flags, **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *derived])  # type: ignore[attr-defined]
    return wrapper
