"""Small argument checks shared by the library.

Each helper validates one concept and raises ``ValueError`` with a message of the form
"Expected `name` to be ..., got ...", so that errors read the same everywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn


def fail(name: str, expected: str, got: Any) -> NoReturn:
    """Raise the project's standard ``ValueError`` for argument ``name``."""
    raise ValueError(f"Expected `{name}` to be {expected}, got {got!r}.")


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is an int > 0 (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        fail(name, "a positive integer", value)
    return value


def check_non_negative_int(value: Any, name: str, *, expected: str = "an integer >= 0") -> int:
    """Return ``value`` if it is an int >= 0 (bools are rejected); ``expected`` words the error when 0 means
    something particular (e.g. "an integer >= 0 (0: no visual prompts)")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        fail(name, expected, value)
    return value


def check_int(value: Any, name: str) -> int:
    """Return ``value`` if it is an int of any sign, e.g. a seed (bools are rejected: ``True`` is an int to Python)."""
    if isinstance(value, bool) or not isinstance(value, int):
        fail(name, "an integer", value)
    return value


def check_non_negative(value: Any, name: str) -> float:
    """Return ``value`` as float if it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or value == float("inf"):
        fail(name, "a finite number >= 0", value)
    return float(value)


def did_you_mean(value: Any, known: Iterable[Any]) -> str:
    """`` Did you mean 'coop'?`` when ``value`` is text close to one of the ``known`` names, else ``""``."""
    if not isinstance(value, str):
        return ""
    names = {str(name).lower(): str(name) for name in known}
    close = difflib.get_close_matches(value.lower(), names, n=1, cutoff=0.6)
    return f" Did you mean {names[close[0]]!r}?" if close else ""


def fail_unknown(name: str, value: Any, known: Iterable[Any], *, expected: str | None = None) -> NoReturn:
    """Refuse ``value`` for ``name``: it is not among ``known`` (listed, with the closest name when one is close)."""
    options = list(known)
    listed = expected or f"one of {', '.join(map(str, options))}"
    raise ValueError(f"Expected `{name}` to be {listed}, got {value!r}.{did_you_mean(value, options)}")


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        fail_unknown(name, value, options, expected=f"one of {', '.join(map(repr, options))}")
    return value


def check_dataclass_keys(cls: type, data: Any, name: str) -> None:
    """Refuse a mapping with keys that are not fields of the dataclass ``cls`` (e.g. a misspelt option)."""
    known = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, Mapping):
        fail(name, f"a mapping with keys among {sorted(known)}", type(data).__name__)
    unknown = sorted(set(data) - known)
    if unknown:
        fail(name, f"keys among {sorted(known)}", unknown)
