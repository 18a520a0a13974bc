"""The one producer of a run's config from user input: a YAML file, the command line's flags and ``KEY=VALUE``
overrides become one resolved, typed `RunConfig`; and what such a config needs on disk, checked without loading.

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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from calprompt._parsing import parse_assignments, parse_value
from calprompt._validation import fail, fail_unknown
from calprompt.experiments.config import RunConfig, check_schedule, type_hints

_OPTION_GROUPS = {"method": "method_options", "calibration": "calibration_options"}
_OPTION_GROUPS.update({group: group for group in _OPTION_GROUPS.values()})


def field_types() -> Mapping[str, Any]:
    """`RunConfig` field name -> its type."""
    return type_hints(RunConfig)


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


def read_settings_file(path: str | Path, what: str = "Config file") -> dict[str, Any]:
    """The mapping of a YAML (or JSON) file of settings (config or sweep), checked to be a mapping."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path} is not valid YAML ({error}). Fix the file.") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        fail(f"the content of {path}", "a mapping of run config fields to values", type(data).__name__)
    return data


def relative_to_file(settings: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``settings`` with a relative ``root`` made absolute against the folder of the file it was read from, so a
    settings file and its data can move together (config files and a sweep's ``base`` alike)."""
    root = settings.get("root")
    if isinstance(root, str) and not Path(root).expanduser().is_absolute():
        return {**settings, "root": os.path.abspath(Path(path).expanduser().parent / os.path.expanduser(root))}
    return settings


def run_config(
    file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
    source: str = "command line",
) -> RunConfig:
    """The resolved run config of ``base`` settings, a config file, the command line's explicit flags and ``--set
    KEY=VALUE`` assignments, in that order of precedence; the protocol name is checked too."""
    from calprompt.calibration.presets import OBJECTIVE_PRESETS
    from calprompt.experiments.protocols import check_method_fits, get_protocol
    from calprompt.methods import get_method

    settings = merged_settings(file, flags, sets, base=base, source=source)
    # The names first (before the recipe lookup and option types), so a misspelt one gets "did you mean".
    if isinstance(settings.get("method"), str):
        get_method(settings["method"])
    if settings.get("calibration", "none") not in OBJECTIVE_PRESETS:
        fail_unknown("calibration", settings["calibration"], OBJECTIVE_PRESETS)
    config = RunConfig(**settings).resolved()
    get_protocol(config.protocol)
    check_method_fits(config)
    check_schedule(config)
    return config


def merged_settings(
    file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
    source: str = "command line",
) -> dict[str, Any]:
    """The settings of `run_config` before they become a config (each value typed by its field): what a sweep
    starts every run from."""
    data = apply_settings({}, dict(base), f"{source} base") if base else {}
    if file is not None:
        data = apply_settings(data, relative_to_file(read_settings_file(file), file), str(file))
    data = apply_settings(data, dict(flags or {}), source)
    return apply_settings(data, parse_assignments(sets, "--set"), source)


# ---------------------------------------------------------------------------------------------------------------------
# What a planned run needs on disk, checked without loading anything: data folders and pretrained weights.
# `calprompt sweep --dry-run` lists these, so that a grid of hundreds of runs does not find out in its first worker
# that a dataset or the weights are missing. The checks only look: they read no images and download nothing.
def missing_data(dataset: str, root: str | None) -> list[str]:
    """What dataset ``dataset`` lacks under ``root`` (exact paths), or ``[]`` when its files are all there."""
    from calprompt.data.registry import get_dataset_spec, missing_paths

    spec = get_dataset_spec(dataset)
    if not spec.needs_root:
        return []
    if root is None:
        return [f"{spec.name}: no data root given (set `root` in the sweep's base, or --set root=DIR)"]
    path = Path(root).expanduser()
    if not path.is_dir():
        return [f"{spec.name}: the data root {path} does not exist"]
    return [f"{spec.name}: missing {expected.describe()}" for expected in missing_paths(spec, path.absolute())]


def missing_weights(backbone: str, pretrained: str | None) -> str | None:
    """Why the weights of ``backbone``/``pretrained`` cannot be loaded offline, or ``None`` when they are found.

    ``pretrained=None`` is random initialisation (nothing to find); a path must exist; an open_clip tag must be in
    the Hugging Face cache (the only place an offline machine can load it from).
    """
    if pretrained is None or backbone.startswith(("local-dir:", "hf-hub:")):
        return None  # random init, or weights named by the folder / repository (checked when loading)
    if Path(pretrained).expanduser().is_file():
        return None
    if os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
        return f"{backbone}: the weights file {pretrained} does not exist"
    from calprompt.clip.loading import EMBEDDED_BACKBONES

    if backbone in EMBEDDED_BACKBONES:
        return f"{backbone}: the weights file {pretrained} does not exist"
    return _missing_hub_weights(backbone, pretrained)


def _missing_hub_weights(backbone: str, tag: str) -> str | None:
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    architecture = backbone.replace("/", "-")
    cfg = open_clip.get_pretrained_cfg(architecture, tag)
    if not cfg:
        return f"{backbone}: open_clip knows no pretrained weights tagged {tag!r}"
    hub = cfg.get("hf_hub")
    if not hub:
        return f"{backbone}/{tag}: these weights come from a URL, not the Hugging Face cache (check them by a run)"
    repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
    names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
        return None
    return f"{backbone}/{tag}: not in the Hugging Face cache (download once: `hf download {repo}`)"


def preflight(configs: Iterable[RunConfig]) -> list[str]:
    """Every missing data folder and weights file of ``configs``, each listed once."""
    problems: list[str] = []
    data, weights = set(), set()
    for config in configs:
        for dataset in (config.dataset, *config.eval_datasets):
            data.add((dataset, config.root))
        weights.add((config.backbone, config.pretrained))
    for dataset, root in sorted(data, key=str):
        problems += [p for p in missing_data(dataset, root) if p not in problems]
    for backbone, pretrained in sorted(weights, key=str):
        problem = missing_weights(backbone, pretrained)
        if problem and problem not in problems:
            problems.append(problem)
    return problems
