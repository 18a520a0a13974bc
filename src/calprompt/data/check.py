"""Checking a data root: which files a dataset needs, which exist, and how many items each split holds.

This is the library side of ``calprompt datasets check``; it reports instead of raising, so one run can list every
problem of every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calprompt.data.items import DatasetSplits
from calprompt.data.registry import ExpectedPath, get_dataset_spec, missing_paths


@dataclass(frozen=True)
class DatasetCheck:
    """What `check_dataset` found for one dataset."""

    name: str
    title: str
    root: Path
    found: tuple[Path, ...]
    missing: tuple[ExpectedPath, ...]
    download: str
    counts: dict[str, int] | None = None  # items per split, when the dataset could be read
    num_classes: int | None = None
    expected_sizes: tuple[int | None, int | None, int | None] | None = None  # published train/val/test sizes
    expected_classes: int | None = None
    val_is_test: bool = False
    missing_images: tuple[str, ...] = ()  # listed by a split file but absent
    unreadable_images: tuple[str, ...] = ()  # present but not decodable (only with verify_images)
    skipped_files: tuple[str, ...] = ()  # files beside the images that are not read as items, "path (why)"
    untrained_classes: tuple[str, ...] = ()  # classes with val/test items but no train items (training refuses them)
    untested_classes: tuple[str, ...] = ()  # classes with train items but no test items (evaluated nowhere)
    error: str | None = None  # why reading failed although the expected paths exist

    @property
    def ok(self) -> bool:
        return (
            not self.missing
            and self.error is None
            and not self.missing_images
            and not self.unreadable_images
            and not self.untrained_classes
        )

    @property
    def matches_published(self) -> bool | None:
        """Whether split sizes and class count equal the published ones (``None`` when unknown or unread)."""
        if self.counts is None or self.expected_sizes is None:
            return None
        sizes = (self.counts["train"], None if self.val_is_test else self.counts["val"], self.counts["test"])
        same_sizes = all(want is None or got == want for got, want in zip(sizes, self.expected_sizes, strict=True))
        return same_sizes and self.expected_classes in (None, self.num_classes)


def check_dataset(name: str, root: str | Path, *, verify_images: bool = False) -> DatasetCheck:
    """Check dataset ``name`` under ``root`` (unknown names raise ``ValueError``; everything else is reported).

    With ``verify_images``, every image is also decoded (slow: it reads the whole dataset).
    """
    spec = get_dataset_spec(name)
    path = Path(root).expanduser().absolute()
    expected = spec.expected_paths(path)
    absent = missing_paths(spec, path)
    base = {
        "name": spec.name,
        "title": spec.title,
        "root": path,
        "found": tuple(resolved for item in expected if (resolved := item.resolve()) is not None),
        "missing": tuple(absent),
        "download": spec.download,
        "expected_sizes": spec.sizes,
        "expected_classes": spec.num_classes,
    }
    if absent:
        return DatasetCheck(**base)
    try:
        splits = spec.read(path, skip_missing=True)
    except (OSError, ValueError) as error:
        return DatasetCheck(**base, error=str(error))
    unreadable: list[str] = []
    if verify_images:
        seen: set[str] = set()
        for item in (*splits.train, *splits.val, *splits.test):
            if item.impath in seen:
                continue
            seen.add(item.impath)
            try:
                splits.image_loader(item.impath)
            except OSError:
                unreadable.append(item.impath)
    return DatasetCheck(
        **base,
        skipped_files=splits.skipped_files,
        untrained_classes=_classes_without(splits, "train"),
        untested_classes=_classes_without(splits, "test"),
        counts={split: len(splits.split(split)) for split in ("train", "val", "test")},
        num_classes=splits.num_classes,
        val_is_test=splits.val_is_test,
        missing_images=splits.missing_files,
        unreadable_images=tuple(unreadable),
    )


def _classes_without(splits: DatasetSplits, split: str) -> tuple[str, ...]:
    """Class names with no items in ``split`` (none when the split is empty: a test-only set, say)."""
    items = splits.split(split)
    if not items:
        return ()
    present = {item.label for item in items}
    return tuple(name for label, name in enumerate(splits.classnames) if label not in present)
