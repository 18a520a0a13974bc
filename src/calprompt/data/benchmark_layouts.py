"""How the published benchmarks lie on disk in the CoOp/Dassl layout: one `DatasetSpec` kind per layout (CoOp split
files, ImageNet's wnid folders, folders of a class index, FGVC-Aircraft's lists), and the download hints.

Paths, class-name rules and split formats follow KaiyangZhou/CoOp (``datasets/*.py``, ``DATASETS.md``). One
deliberate difference: where CoOp lists image folders in the file system's own order (``os.listdir``, which differs
between machines), calprompt sorts file names, so ImageNet few-shot subsets are the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calprompt.data.items import DatasetSplits, Item
from calprompt.data.readers import (
    assemble,
    class_folders,
    classnames_from_items,
    folder_items,
    read_classnames_txt,
    read_split_json,
)
from calprompt.data.registry import DatasetSpec, ExpectedPath, require_root

_COOP = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
CLASSNAMES_TXT = "https://drive.google.com/file/d/1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF/view?usp=sharing"


@dataclass(frozen=True, kw_only=True)
class SplitFileSpec(DatasetSpec):
    """A dataset whose train/val/test lists come from CoOp's ``split_zhou_*.json``."""

    image_dir: str  # split paths are relative to this folder ("" = the dataset folder itself)
    split_file: str
    renames: tuple[tuple[str, str], ...] = ()  # CoOp's class-name renamings, idempotent on its split files

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        folder = self.directory(root)
        return (
            ExpectedPath(folder / self.image_dir if self.image_dir else folder, "dir", "image folder"),
            ExpectedPath(folder / self.split_file, "file", "CoOp split file"),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        folder = self.directory(require_root(self, root))
        split_path = folder / self.split_file
        splits = read_split_json(split_path, folder / self.image_dir, renames=dict(self.renames))
        return assemble(
            name=self.name,
            template=self.template,
            classnames=classnames_from_items(splits, split_path),
            splits=splits,
            context=str(split_path),
            skip_missing=skip_missing,
        )


def _wnid_items(image_dir: Path, wnids: list[str], names: dict[str, str], names_path: Path) -> list[Item]:
    """Items of wnid class folders, label = position in ``wnids``, class name from ``classnames.txt``."""
    items: list[Item] = []
    for label, wnid in enumerate(wnids):
        if wnid not in names:
            raise ValueError(
                f"Folder {image_dir / wnid} is not listed in {names_path}. Use the classnames.txt from CoOp's "
                f"DATASETS.md ({CLASSNAMES_TXT}) and remove folders that are not ImageNet classes."
            )
        items.extend(folder_items(image_dir / wnid, label, names[wnid]))
    return items


def _no_class_folders(folder: Path, hint: str) -> ValueError:
    return ValueError(f"{folder} has no class sub-folders. {hint}")


@dataclass(frozen=True, kw_only=True)
class ImageNetSpec(DatasetSpec):
    """ImageNet: wnid folders under ``images/train`` and ``images/val``; the val set is also the test set."""

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        folder = self.directory(root)
        return (
            ExpectedPath(folder / "images" / "train", "dir", "training images in 1,000 wnid folders"),
            ExpectedPath(folder / "images" / "val", "dir", "validation images in 1,000 wnid folders"),
            ExpectedPath(folder / "classnames.txt", "file", "CoOp's class-name list"),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        folder = self.directory(require_root(self, root))
        names_path = folder / "classnames.txt"
        names = read_classnames_txt(names_path)
        train_dir, val_dir = folder / "images" / "train", folder / "images" / "val"
        wnids = class_folders(train_dir)  # label = index in the sorted wnids, as in CoOp
        if not wnids:
            raise _no_class_folders(train_dir, "Extract the ImageNet training archives into one folder per wnid.")
        train = _wnid_items(train_dir, wnids, names, names_path)
        val_wnids = class_folders(val_dir)
        if not val_wnids:
            raise _no_class_folders(
                val_dir,
                "The official validation images come as one flat folder; sort them into wnid sub-folders "
                "(e.g. with the widely used valprep.sh script) as CoOp expects.",
            )
        unknown = sorted(set(val_wnids) - set(wnids))
        if unknown:
            raise ValueError(
                f"{val_dir} has class folders that {train_dir} lacks: {unknown[:5]}. Both must hold the same wnids."
            )
        label_of = {wnid: label for label, wnid in enumerate(wnids)}
        test = [item for wnid in val_wnids for item in folder_items(val_dir / wnid, label_of[wnid], names[wnid])]
        return assemble(
            name=self.name,
            template=self.template,
            classnames=[names[wnid] for wnid in wnids],
            splits={"train": train, "test": test},
            context=str(folder),
            skip_missing=skip_missing,
            check_files=False,  # listed from the folders themselves
            val_is_test=True,
        )


def _classnames_txt(spec: DatasetSpec, root: Path) -> ExpectedPath:
    # CoOp asks users to copy imagenet/classnames.txt next to each variant; the original is accepted too.
    return ExpectedPath(
        spec.directory(root) / "classnames.txt",
        "file",
        "copy of imagenet/classnames.txt",
        alternatives=(root / "imagenet" / "classnames.txt",),
    )


def _classnames_path(spec: DatasetSpec, root: Path) -> Path:
    expected = _classnames_txt(spec, root)
    found = expected.resolve()
    if found is None:
        raise FileNotFoundError(f"Class-name file not found: {expected.describe()}. {spec.download.strip()}")
    return found


@dataclass(frozen=True, kw_only=True)
class WnidFolderSpec(DatasetSpec):
    """A test-only ImageNet variant with one folder per wnid present (Sketch: 1000, -A and -R: 200 classes)."""

    image_dir: str

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        return (
            ExpectedPath(self.directory(root) / self.image_dir, "dir", "images in wnid folders"),
            _classnames_txt(self, root),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        root = require_root(self, root)
        names_path = _classnames_path(self, root)
        names = read_classnames_txt(names_path)
        image_dir = self.directory(root) / self.image_dir
        # Labels index the wnid folders present, sorted (= classnames.txt order, which is sorted by wnid).
        wnids = class_folders(image_dir)
        if not wnids:
            hint = f"Extract the {self.title} archive so that it holds one folder per wnid."
            raise _no_class_folders(image_dir, hint)
        test = _wnid_items(image_dir, wnids, names, names_path)
        return assemble(
            name=self.name,
            template=self.template,
            classnames=[names[wnid] for wnid in wnids],
            splits={"test": test},
            context=str(image_dir),
            skip_missing=skip_missing,
            check_files=False,
        )


@dataclass(frozen=True, kw_only=True)
class IndexFolderSpec(DatasetSpec):
    """ImageNet-V2: folders ``0`` .. ``999`` index the classes in ``classnames.txt`` order."""

    image_dir: str

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        return (
            ExpectedPath(self.directory(root) / self.image_dir, "dir", "images in folders 0..999"),
            _classnames_txt(self, root),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        root = require_root(self, root)
        names_path = _classnames_path(self, root)
        classnames = list(read_classnames_txt(names_path).values())
        image_dir = self.directory(root) / self.image_dir
        test: list[Item] = []
        for label, classname in enumerate(classnames):
            class_dir = image_dir / str(label)
            if not class_dir.is_dir():
                raise FileNotFoundError(
                    f"Class folder not found: {class_dir} ({names_path} lists {len(classnames)} classes, so folders "
                    f"0..{len(classnames) - 1} must exist). Re-extract the matched-frequency archive."
                )
            test.extend(folder_items(class_dir, label, classname))
        return assemble(
            name=self.name,
            template=self.template,
            classnames=classnames,
            splits={"test": test},
            context=str(image_dir),
            skip_missing=skip_missing,
            check_files=False,
        )


@dataclass(frozen=True, kw_only=True)
class AircraftSpec(DatasetSpec):
    """FGVC-Aircraft (variants): ``variants.txt`` gives the labels, ``images_variant_<split>.txt`` the items."""

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        folder = self.directory(root)
        return (
            ExpectedPath(folder / "images", "dir", "image folder"),
            ExpectedPath(folder / "variants.txt", "file", "variant names, one per line"),
            *(
                ExpectedPath(folder / f"images_variant_{split}.txt", "file", f"{split} list")
                for split in ("train", "val", "test")
            ),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        folder = self.directory(require_root(self, root))
        variants_path = folder / "variants.txt"
        # Variant names may contain spaces and "/" (e.g. "F-16A/B"); the line index is the label.
        classnames = [line.strip() for line in variants_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        label_of = {name: label for label, name in enumerate(classnames)}
        splits: dict[str, list[Item]] = {}
        for split in ("train", "val", "test"):
            list_path = folder / f"images_variant_{split}.txt"
            items = []
            for number, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                image_id, _, classname = line.strip().partition(" ")
                if classname not in label_of:
                    raise ValueError(
                        f"{list_path}, line {number}: variant {classname!r} is not in {variants_path}; expected "
                        "'<image id> <variant>' with a variant from that file. Re-extract fgvc-aircraft-2013b."
                    )
                impath = str(folder / "images" / f"{image_id}.jpg")
                items.append(Item(impath=impath, label=label_of[classname], classname=classname))
            splits[split] = items
        return assemble(
            name=self.name,
            template=self.template,
            classnames=classnames,
            splits=splits,
            context=str(folder),
            skip_missing=skip_missing,
        )


def split_hint(title: str, steps: str, split_file: str | None, url: str | None) -> str:
    lines = [f"  {step.strip()}" for step in steps.strip().splitlines()]
    if split_file and url:
        lines.append(f"  Put {split_file} (CoOp's fixed split) in the dataset folder: {url}")
    lines.append(f"  Full instructions: {_COOP}#{title.lower()}")
    return "\n".join(lines)
