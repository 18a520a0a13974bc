"""Readers for the file formats of the CoOp/Dassl layout: split JSON, ``classnames.txt``, class folders.

Every reader fails with a message naming the file (and the line or entry) and the fix, never skips silently.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from calprompt.data.items import DatasetSplits, Item

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
_ENTRY_FORM = "[relative_image_path (str), label (int >= 0), classname (str)]"


def read_split_json(path: Path, image_dir: Path, *, renames: Mapping[str, str] | None = None) -> dict[str, list[Item]]:
    """Read a CoOp split file ``{"train": [...], "val": [...], "test": [...]}`` into absolute-path items.

    Each entry is ``[impath relative to image_dir, label, classname]``; ``renames`` maps class names (idempotently:
    CoOp's split files already hold the new names).
    """
    if not path.is_file():
        raise FileNotFoundError(f"Split file not found: {path}. Download it as described in CoOp's DATASETS.md.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Split file {path} is not valid JSON ({error}). Re-download it.") from error
    if not isinstance(data, dict) or any(not isinstance(data.get(split), list) for split in SPLIT_NAMES):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"Split file {path} has the wrong shape: expected an object with lists under 'train', 'val' and 'test', "
            f"got {got!r}. Re-download the split file."
        )
    renames = renames or {}
    splits: dict[str, list[Item]] = {}
    for split in SPLIT_NAMES:
        items = []
        for index, entry in enumerate(data[split]):
            if not _is_split_entry(entry):
                raise ValueError(
                    f"Split file {path}: entry {split}[{index}] is {entry!r}; expected {_ENTRY_FORM}. "
                    "Re-download the split file."
                )
            impath, label, classname = entry
            classname = renames.get(classname, classname)
            items.append(Item(impath=str(image_dir / impath), label=label, classname=classname))
        splits[split] = items
    return splits


def _is_split_entry(entry: Any) -> bool:
    return (
        isinstance(entry, list | tuple)
        and len(entry) == 3
        and isinstance(entry[0], str)
        and bool(entry[0])
        and isinstance(entry[1], int)
        and not isinstance(entry[1], bool)
        and entry[1] >= 0
        and isinstance(entry[2], str)
    )


def classnames_from_items(splits: Mapping[str, Sequence[Item]], source: Path | str) -> tuple[str, ...]:
    """Class names ordered by label, taken from the items (train first, as Dassl does).

    Labels must be 0..n-1 without gaps and each label must carry one class name; ``source`` names the file in errors.
    """
    names: dict[int, str] = {}
    for split in SPLIT_NAMES:
        for item in splits.get(split, ()):
            known = names.setdefault(item.label, item.classname)
            if known != item.classname:
                raise ValueError(
                    f"{source}: label {item.label} is called both {known!r} and {item.classname!r} "
                    f"(item {item.impath} in {split}). Each label must have one class name; re-download the file."
                )
    if not names:
        raise ValueError(f"{source} lists no items. Re-download it or check that it is the right file.")
    absent = sorted(set(range(max(names) + 1)) - set(names))
    if absent:
        raise ValueError(
            f"{source}: labels must run from 0 to {max(names)} without gaps, but no item has label(s) {absent[:10]}. "
            "Re-download the file."
        )
    return tuple(names[label] for label in range(len(names)))


def read_classnames_txt(path: Path) -> dict[str, str]:
    """Read ImageNet's ``classnames.txt`` (lines ``n01440764 tench``) into an ordered wnid -> name dict."""
    if not path.is_file():
        raise FileNotFoundError(f"Class-name file not found: {path}. Download classnames.txt as in CoOp's DATASETS.md.")
    names: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        folder, _, name = line.strip().partition(" ")
        if not name.strip():
            raise ValueError(
                f"{path}, line {number}: expected '<folder> <class name>' (e.g. 'n01440764 tench'), got {line!r}."
            )
        if folder in names:
            raise ValueError(f"{path}, line {number}: folder {folder!r} is listed twice. Re-download the file.")
        names[folder] = name.strip()
    if not names:
        raise ValueError(f"{path} is empty; expected lines '<folder> <class name>'. Re-download it.")
    return names


def visible_entries(folder: Path) -> list[os.DirEntry[str]]:
    """Entries of ``folder`` whose names do not start with a dot, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda entry: entry.name)


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``folder`` (files such as README.txt are ignored)."""
    return [entry.name for entry in visible_entries(folder) if entry.is_dir()]


def folder_items(folder: Path, label: int, classname: str) -> list[Item]:
    """One item per visible file in ``folder``, sorted by file name."""
    return [
        Item(impath=entry.path, label=label, classname=classname)
        for entry in visible_entries(folder)
        if entry.is_file()
    ]


def keep_existing(items: Iterable[Item], *, skip_missing: bool, context: str) -> tuple[list[Item], list[str]]:
    """Split ``items`` into those whose image file exists and the missing paths; raise unless ``skip_missing``."""
    kept: list[Item] = []
    missing: list[str] = []
    for item in items:
        if os.path.isfile(item.impath):
            kept.append(item)
        elif not skip_missing:
            raise FileNotFoundError(
                f"Image file not found: {item.impath} (listed by {context}). Check that the download was unpacked "
                "completely (`calprompt datasets check` lists every missing file), or pass skip_missing=True "
                "(CLI: --skip-missing) to drop such items."
            )
        else:
            missing.append(item.impath)
    return kept, missing


def assemble(
    *,
    name: str,
    template: str,
    classnames: Sequence[str],
    splits: Mapping[str, Sequence[Item]],
    context: str,
    skip_missing: bool,
    check_files: bool = True,
    val_is_test: bool = False,
) -> DatasetSplits:
    """Build `DatasetSplits`, first checking that every listed image exists (see `keep_existing`)."""
    checked: dict[str, tuple[Item, ...]] = {}
    missing: list[str] = []
    counts: list[tuple[str, int]] = []
    for split in SPLIT_NAMES:
        items = list(splits.get(split, ()))
        if check_files and not (val_is_test and split == "val"):
            items, absent = keep_existing(items, skip_missing=skip_missing, context=f"{context}, {split}")
            missing.extend(absent)
            counts.append((split, len(absent)))
        checked[split] = tuple(items)
    if val_is_test:
        checked["val"] = checked["test"]
    if missing:
        logger.warning(
            "Skipped %d listed image file(s) of %s that do not exist (first: %s).", len(missing), name, missing[0]
        )
    return DatasetSplits(
        name=name,
        classnames=tuple(classnames),
        train=checked["train"],
        val=checked["val"],
        test=checked["test"],
        template=template,
        val_is_test=val_is_test,
        missing_files=tuple(missing),
        missing_counts=tuple(counts) if missing else (),
    )
