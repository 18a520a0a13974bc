"""A `RunConfig` from a YAML file and ``KEY=VALUE`` overrides, each value converted by the type of its field.

Precedence, lowest first: the field defaults, the file, the command line's flags, ``--set`` assignments. Keys are
`RunConfig` field names; ``method.KEY`` and ``calibration.KEY`` (or ``method_options.KEY``,
``calibration_options.KEY``) set one method setting or objective constant. An unknown key or a value that does not
fit its field fails before any work, with one message naming the key (and its source). A relative ``root`` in a
file is relative to the file's folder, so a config file and its data can move together.

Example file::

    dataset: oxford_pets
    root: /data
    method: coop
    method_options: {n_ctx: 16}
    calibration: ours
    shots: 16
    seed: 1
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from calprompt._validation import fail
from calprompt.experiments.config import RunConfig
from calprompt.experiments.options import parse_value

_OPTION_GROUPS = {"method": "method_options", "calibration": "calibration_options"}
_OPTION_GROUPS.update({group: group for group in _OPTION_GROUPS.values()})


def field_types() -> dict[str, Any]:
    """`RunConfig` field name -> its type."""
    return typing.get_type_hints(RunConfig)


def _unknown(key: str, source: str) -> None:
    known = [f.name for f in dataclasses.fields(RunConfig)]
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    fail(f"{source} key", f"a run config field{hint}, one of {', '.join(known)}, or method.KEY / calibration.KEY", key)


def apply_settings(data: dict[str, Any], values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``data`` updated with ``values`` (converted by field type; dotted keys set one option); a new dict."""
    hints = field_types()
    merged = {**data, "method_options": dict(data.get("method_options", {}))}
    merged["calibration_options"] = dict(data.get("calibration_options", {}))
    for key, value in values.items():
        group, dot, option = key.partition(".")
        if dot:
            if group not in _OPTION_GROUPS or not option:
                _unknown(key, source)
            merged[_OPTION_GROUPS[group]][option] = value
        elif key in ("method_options", "calibration_options"):
            if not isinstance(value, Mapping):
                fail(f"{source} key {key}", "a mapping of option names to values", value)
            merged[key].update(value)
        elif key in hints:
            merged[key] = parse_value(value, hints[key], key if source == "command line" else f"{key} ({source})")
        else:
            _unknown(key, source)
    return merged


def parse_assignments(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``["shots=4", "method.n_ctx=16"]`` -> ``{"shots": "4", "method.n_ctx": "16"}`` (values stay text)."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(flag, "KEY=VALUE (e.g. shots=4 or method.n_ctx=16)", pair)
        values[key.strip()] = value
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML (or JSON) config file, checked to be a mapping; a relative root becomes absolute."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path} is not valid YAML ({error}). Fix the file.") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        fail(f"the content of {path}", "a mapping of run config fields to values", type(data).__name__)
    root = data.get("root")
    if isinstance(root, str) and not Path(root).expanduser().is_absolute():
        data["root"] = os.path.abspath(path.parent / os.path.expanduser(root))
    return data


def build_run_config(
    file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
) -> RunConfig:
    """The run config of a file, the command line's explicit flags and ``--set KEY=VALUE`` assignments."""
    data: dict[str, Any] = {}
    if file is not None:
        data = apply_settings(data, read_config_file(file), str(file))
    data = apply_settings(data, dict(flags or {}), "command line")
    data = apply_settings(data, parse_assignments(sets, "--set"), "command line")
    return RunConfig(**data)
