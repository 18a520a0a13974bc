"""Users' own data: an image folder (one sub-folder per class) or CSV files (``path,label`` or ``path,classname``).

For both, ``root`` is the dataset folder itself (not a folder holding it).

* ``folder``: ``root/{train,val,test}/<class>/<image>`` (any of the three; missing ones are empty), or, when none
  of those exist, ``root/<class>/<image>`` read as a test-only set. Labels index the sorted class-folder names.
* ``csv``: ``root/{train,val,test}.csv`` (any of them), or ``root`` itself a ``.csv`` file read as the test split.
  The header names the columns: ``path`` plus ``label`` and/or ``classname``. Relative paths are relative to the CSV
  file's folder. With ``path,label``, class names come from ``classnames.txt`` beside the CSVs (one name per line,
  line index = label); with ``path,classname`` alone, labels index the sorted class names.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from calprompt.data.items import DatasetSplits, Item
from calprompt.data.readers import SPLIT_NAMES, assemble, class_folders, visible_entries
from calprompt.data.registry import DatasetSpec, ExpectedPath, register_dataset, require_root

logger = logging.getLogger(__name__)

# Extensions PIL reads; other files in class folders (notes, thumbnails caches) are not items.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass(frozen=True, kw_only=True)
class ImageFolderSpec(DatasetSpec):
    """A generic image folder, one sub-folder per class (see the module docstring for the layout)."""

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        return (ExpectedPath(root, "dir", "folder with one sub-folder per class, or train/ val/ test/ of such"),)

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        root = require_root(self, root)
        split_dirs = {split: root / split for split in SPLIT_NAMES if (root / split).is_dir()}
        if not split_dirs:
            split_dirs = {"test": root}  # a flat class-folder tree: evaluation data only
        classnames = sorted({name for folder in split_dirs.values() for name in class_folders(folder)})
        if not classnames:
            raise ValueError(
                f"{root} has no class sub-folders. Put each class's images in its own sub-folder "
                "(root/<class>/<image> or root/train/<class>/<image>)."
            )
        label_of = {name: label for label, name in enumerate(classnames)}
        splits: dict[str, list[Item]] = {}
        skipped: list[str] = []
        for split, folder in split_dirs.items():
            items = []
            for classname in class_folders(folder):
                for entry in visible_entries(folder / classname):
                    suffix = Path(entry.name).suffix.lower()
                    if entry.is_dir():
                        skipped.append(f"{entry.path} (a folder inside a class folder)")
                    elif suffix not in IMAGE_EXTENSIONS:
                        skipped.append(f"{entry.path} (not an image extension: {suffix or 'none'})")
                    else:  # broken symlinks too: `assemble` reports them as missing files
                        items.append(Item(impath=entry.path, label=label_of[classname], classname=classname))
            splits[split] = items
        _require_test_split(splits, f"{root}: train/ has images but there is no test/ with any", "root/test/<class>/")
        if skipped:
            logger.warning(
                "Ignored %d entries under %s that are not image files, e.g. %s (%s).",
                len(skipped),
                root,
                "; ".join(skipped[:3]),
                self.name,
            )
        return assemble(
            name=self.name,
            template=self.template,
            classnames=classnames,
            splits=splits,
            context=str(root),
            skip_missing=skip_missing,
        ).with_splits(skipped_files=tuple(skipped))


def _require_test_split(splits: dict[str, list[Item]], problem: str, fix: str) -> None:
    """Refuse training data without test data up front: every run evaluates on the test split (after training)."""
    if splits.get("train") and not splits.get("test"):
        raise ValueError(f"{problem}; every run is evaluated on the test split. Add test images ({fix}).")


def _csv_files(root: Path) -> dict[str, Path]:
    if root.is_file():
        return {"test": root}
    return {split: root / f"{split}.csv" for split in SPLIT_NAMES if (root / f"{split}.csv").is_file()}


@dataclass(frozen=True)
class _Row:
    path: str
    label: int | None
    classname: str | None


def _read_csv(path: Path) -> list[_Row]:
    # utf-8-sig: spreadsheets write a byte-order mark; the csv module reads CRLF line ends as written.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [column.strip().lower() for column in next(reader, [])]
        if "path" not in header or not ({"label", "classname"} & set(header)):
            raise ValueError(
                f"{path}: expected a header row 'path,label' or 'path,classname', got {','.join(header)!r}."
            )
        columns = {name: header.index(name) for name in ("path", "label", "classname") if name in header}
        rows = []
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                expected = f"{len(header)} columns ({','.join(header)})"
                raise ValueError(f"{path}, line {number}: expected {expected}, got {row!r}.")
            impath = row[columns["path"]].strip()
            label = None
            if "label" in columns:
                text = row[columns["label"]].strip()
                if not (text.isascii() and text.isdigit()):  # "²".isdigit() is true, but int() refuses it
                    raise ValueError(f"{path}, line {number}: expected `label` to be an integer >= 0, got {text!r}.")
                label = int(text)
            classname = row[columns["classname"]].strip() if "classname" in columns else None
            if not impath or classname == "":
                raise ValueError(f"{path}, line {number}: empty path or class name in {row!r}.")
            # Relative paths are relative to the CSV file's folder, so the folder can move as a whole.
            rows.append(_Row(str((path.parent / impath).absolute()), label, classname))
    return rows


def _csv_classnames(root: Path, files: dict[str, Path], rows: dict[str, list[_Row]]) -> tuple[list[str], str]:
    """Class names (index = label) and where they came from (for error messages)."""
    folder = root if root.is_dir() else root.parent
    names_path = folder / "classnames.txt"
    if names_path.is_file():
        text = names_path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
        names = [line.strip() for line in text.splitlines() if line.strip()]
        return names, str(names_path)
    all_rows = [row for split_rows in rows.values() for row in split_rows]
    source = ", ".join(str(path) for path in files.values())
    if any(row.classname is None for row in all_rows):
        raise FileNotFoundError(
            f"Class-name file not found: {names_path}. CSV files with 'path,label' need it (one class name per "
            "line, line index = label); or use 'path,classname' columns instead."
        )
    if not all_rows or any(row.label is None for row in all_rows):
        return sorted({str(row.classname) for row in all_rows}), source
    # Every row has both columns: the labels define the order, and each label must carry one class name.
    names_by_label: dict[int, str] = {}
    for row in all_rows:
        known = names_by_label.setdefault(int(row.label or 0), str(row.classname))
        if known != row.classname:
            raise ValueError(f"{source}: label {row.label} is called both {known!r} and {row.classname!r}.")
    absent = sorted(set(range(max(names_by_label) + 1)) - set(names_by_label))
    if absent:
        raise ValueError(f"{source}: labels must run from 0 without gaps; label(s) {absent[:10]} have no rows.")
    return [names_by_label[label] for label in range(len(names_by_label))], source


@dataclass(frozen=True, kw_only=True)
class CsvSpec(DatasetSpec):
    """CSV files listing ``path`` with ``label`` and/or ``classname`` (see the module docstring)."""

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        if root.is_file():
            return (ExpectedPath(root, "file", "CSV file with a 'path,label' or 'path,classname' header"),)
        return (
            ExpectedPath(
                root / "train.csv",
                "file",
                "at least one of train.csv, val.csv, test.csv",
                alternatives=(root / "val.csv", root / "test.csv"),
            ),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        root = require_root(self, root)
        files = _csv_files(root)
        if not files:
            raise FileNotFoundError(f"No train.csv, val.csv or test.csv in {root}. Add at least one.")
        rows = {split: _read_csv(path) for split, path in files.items()}
        classnames, source = _csv_classnames(root, files, rows)
        label_of = {name: label for label, name in enumerate(classnames)}
        splits: dict[str, list[Item]] = {}
        for split, split_rows in rows.items():
            items = []
            for row in split_rows:
                label = row.label if row.label is not None else label_of.get(row.classname or "")
                if label is None or label >= len(classnames):
                    value = row.label if row.label is not None else row.classname
                    raise ValueError(
                        f"{files[split]}: row {row.path!r} has label/class {value!r}, which {source} does not define "
                        f"({len(classnames)} classes)."
                    )
                if row.classname is not None and row.classname != classnames[label]:
                    raise ValueError(
                        f"{files[split]}: row {row.path!r} has label {label} and class {row.classname!r}, but "
                        f"{source} calls label {label} {classnames[label]!r}."
                    )
                items.append(Item(impath=row.path, label=label, classname=classnames[label]))
            splits[split] = items
        _require_test_split(splits, f"{root}: train.csv has rows but there is no test.csv with any", "test.csv")
        return assemble(
            name=self.name,
            template=self.template,
            classnames=classnames,
            splits=splits,
            context=", ".join(str(path) for path in files.values()),
            skip_missing=skip_missing,
        )


_HINT = "  {what}\n  See `calprompt.data.custom` for the layout; root is the dataset folder itself."

register_dataset(
    ImageFolderSpec(
        name="folder",
        title="Image folder",
        aliases=("imagefolder",),
        download=_HINT.format(what="Arrange images as root/<class>/<image> or root/{train,val,test}/<class>/<image>."),
    )
)
register_dataset(
    CsvSpec(
        name="csv",
        title="CSV files",
        download=_HINT.format(what="Write root/{train,val,test}.csv with a 'path,label' or 'path,classname' header."),
    )
)
