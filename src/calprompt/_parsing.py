"""Values from text: booleans, numbers, lists and ``KEY=VALUE`` assignments, converted by the type they must have.

Settings arrive as text from the command line (``--method-option class_specific_context=false``, ``--set
shots=4``) or as YAML values; each is converted by the type of the field it sets, so ``"False"`` is never read as a
true string, and a value that does not fit raises an error naming the setting.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Iterable
from typing import Any

from calprompt._validation import fail

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_NONE = ("null", "none", "~")


def parse_bool(value: Any, name: str) -> bool:
    """``True``/``False``, or text among true/false/1/0/yes/no/on/off in any case (else an error naming ``name``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    fail(name, "a boolean (true/false, 1/0, yes/no)", value)


def parse_float(value: Any, name: str) -> float:
    """A finite float from a number or its text (nan and infinities are refused naming ``name``)."""
    if isinstance(value, bool):
        fail(name, "a finite number", value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        fail(name, "a finite number", value)
    if not math.isfinite(number):
        fail(name, "a finite number", value)
    return number


def parse_int(value: Any, name: str) -> int:
    """An integer from an int or its text (bools and fractional numbers are refused)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    fail(name, "an integer", value)


def parse_value(value: Any, hint: Any, name: str) -> Any:
    """Convert ``value`` (text or an already parsed value) to the type ``hint``; an unfit value names ``name``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in args if arg is not type(None)]
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        if len(options) == 1:
            return parse_value(value, options[0], name)
        for option in options:
            try:
                return parse_value(value, option, name)
            except ValueError:
                continue
        fail(name, f"a value of type {hint}", value)
    if hint is bool:
        return parse_bool(value, name)
    if hint is int:
        return parse_int(value, name)
    if hint is float:
        return parse_float(value, name)
    if hint is str:
        if not isinstance(value, str):
            fail(name, "a string", value)
        return value
    if origin in (tuple, list):
        parsed = _list_text(value) if isinstance(value, str) else value
        if not isinstance(parsed, list | tuple):
            fail(name, "a list (JSON, e.g. [1, 2])", value)
        inner = args[0] if args else Any
        items = [item if inner is Any else parse_value(item, inner, f"{name}[{i}]") for i, item in enumerate(parsed)]
        return tuple(items) if origin is tuple else items
    if isinstance(value, str):  # an untyped field: read JSON when it is JSON, else keep the text
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _list_text(text: str) -> Any:
    """A JSON list (``["a", "b"]``), else comma-separated items (``a,b``; ``""`` is the empty list)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [item.strip() for item in text.split(",") if item.strip()]


def parse_assignments(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``["shots=4", "method.n_ctx=16"]`` -> ``{"shots": "4", "method.n_ctx": "16"}`` (values stay text; ``flag``
    names the option they came from in the error for a pair without ``=``)."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(flag, "KEY=VALUE (e.g. shots=4 or method.n_ctx=16)", pair)
        values[key.strip()] = value
    return values
