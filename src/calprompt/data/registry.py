"""Dataset specs and their registry: one `DatasetSpec` per dataset, looked up by a case-insensitive name.

A spec knows only its files (layout, class-name source, expected paths) and its zero-shot template; few-shot
sampling and the base/novel split are written once in `calprompt.data.fewshot` for every dataset.

Built-in specs are registered where they are defined (``register_dataset(...)`` next to each spec); the modules
holding them are listed explicitly in `BUILTIN_SPEC_MODULES` and imported on first lookup, so nothing depends on
an import having happened somewhere else.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from calprompt._validation import fail, fail_unknown
from calprompt.data.items import DatasetSplits
from calprompt.plugins import DATASET_MODULES

# Modules whose import registers the built-in specs (in this order); listed in `calprompt.plugins`.
BUILTIN_SPEC_MODULES: tuple[str, ...] = DATASET_MODULES

DEFAULT_TEMPLATE = "a photo of a {}."

_REGISTRY: dict[str, DatasetSpec] = {}  # canonical name -> spec
_LOOKUP: dict[str, str] = {}  # normalised name or alias -> canonical name
_builtins_loaded = False


@dataclass(frozen=True)
class ExpectedPath:
    """A file or folder a dataset needs, with what it is; ``alternatives`` are accepted in its place."""

    path: Path
    kind: Literal["file", "dir"]
    what: str
    alternatives: tuple[Path, ...] = ()

    def resolve(self) -> Path | None:
        """The first of ``path`` and its alternatives that exists with the right kind, else ``None``."""
        for candidate in (self.path, *self.alternatives):
            if candidate.is_dir() if self.kind == "dir" else candidate.is_file():
                return candidate
        return None

    def describe(self) -> str:
        text = f"{self.path}{'/' if self.kind == 'dir' else ''} ({self.what})"
        if self.alternatives:
            text += " or " + " or ".join(str(path) for path in self.alternatives)
        return text


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """What calprompt knows about one dataset: where its files are and how to read them.

    Subclasses implement `expected_paths` (used by `calprompt datasets check` and to fail early with the exact
    missing path) and `read` (which may assume every required path exists).
    """

    name: str  # canonical id, e.g. "oxford_pets"
    title: str  # display name, e.g. "OxfordPets"
    dataset_dir: str = ""  # folder under the data root; "" means the root itself is the dataset folder
    template: str = DEFAULT_TEMPLATE
    aliases: tuple[str, ...] = ()
    needs_root: bool = True  # False for generated data (the toy world renders images from virtual ids)
    test_only: bool = False  # domain-shift targets: no train/val split
    benchmark: bool = False  # one of the published benchmarks (checked by `datasets check` without names)
    num_classes: int | None = None  # the real class count, when known
    sizes: tuple[int | None, int | None, int | None] | None = None  # published train/val/test sizes
    download: str = ""  # how to obtain the files (follows CoOp's DATASETS.md)

    def directory(self, root: Path) -> Path:
        return root / self.dataset_dir if self.dataset_dir else root

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        """The files and folders that must exist under ``root``."""
        return ()

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        """Read the splits; called by `load_dataset` after the expected paths were found."""
        raise NotImplementedError


SpecT = TypeVar("SpecT", bound=DatasetSpec)


def _normalise(name: str) -> str:
    # "Oxford-Pets", "oxford_pets" and "OxfordPets" all name the same dataset.
    return re.sub(r"[^a-z0-9]", "", name.lower())


def register_dataset(spec: SpecT) -> SpecT:
    """Add ``spec`` to the registry under its name and aliases; a name already taken raises ``ValueError``."""
    keys = [_normalise(spec.name), *(_normalise(alias) for alias in spec.aliases)]
    if spec.name in _REGISTRY:
        raise ValueError(f"Dataset {spec.name!r} is already registered; pick another name.")
    for key in keys:
        if not key:
            raise ValueError(f"Expected dataset names and aliases to contain letters or digits, got {spec.name!r}.")
        if key in _LOOKUP:
            raise ValueError(f"Dataset name or alias {key!r} of {spec.name!r} is already used by {_LOOKUP[key]!r}.")
    _REGISTRY[spec.name] = spec
    for key in keys:
        _LOOKUP[key] = spec.name
    return spec


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_SPEC_MODULES:
            importlib.import_module(module)


def list_datasets() -> tuple[str, ...]:
    """Canonical names of every registered dataset, in registration order."""
    _load_builtins()
    return tuple(_REGISTRY)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered under ``name`` or one of its aliases (case, ``-``, ``_`` and spaces ignored)."""
    _load_builtins()
    canonical = _LOOKUP.get(_normalise(name)) if isinstance(name, str) else None
    if canonical is None:
        fail_unknown("dataset", name, _REGISTRY)
    return _REGISTRY[canonical]


def missing_paths(spec: DatasetSpec, root: Path) -> list[ExpectedPath]:
    """The expected paths of ``spec`` under ``root`` that do not exist."""
    return [expected for expected in spec.expected_paths(root) if expected.resolve() is None]


def resolve_root(spec: DatasetSpec, root: str | Path | None) -> Path | None:
    """Check ``root`` for ``spec`` and return it as an absolute path (``None`` for datasets without files)."""
    if root is None:
        return require_root(spec, root) if spec.needs_root else None
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(
            f"Data root not found: {path}. Create it and put the {spec.title} files in it as described below, or "
            f"pass the folder that already holds them.\n{spec.download}".rstrip()
        )
    return path


def require_root(spec: DatasetSpec, root: Path | None) -> Path:
    """``root`` for a spec that reads files; ``None`` raises the same error as `resolve_root`."""
    if root is None:
        fail(
            "root",
            f"the data folder holding {spec.dataset_dir or 'the files'}/ of dataset {spec.name!r} (CLI: --root DIR)",
            None,
        )
    return root


def load_dataset(name: str, root: str | Path | None = None, *, skip_missing: bool = False) -> DatasetSplits:
    """Load the train/val/test items and class names (index = label) of dataset ``name`` from ``root``.

    Every listed image file must exist: a missing one raises ``FileNotFoundError`` naming it, unless
    ``skip_missing=True``, which drops such items, logs a warning with their count and records them in
    ``DatasetSplits.missing_files``.
    """
    spec = get_dataset_spec(name)
    path = resolve_root(spec, root)
    if path is not None:
        missing = missing_paths(spec, path)
        if missing:
            listing = "\n".join(f"  missing: {expected.describe()}" for expected in missing)
            raise FileNotFoundError(
                f"Dataset {spec.name!r} ({spec.title}) is incomplete under {path}:\n{listing}\n"
                f"How to get it:\n{spec.download}".rstrip()
            )
    return spec.read(path, skip_missing=skip_missing)
