"""The data types every dataset produces: items, splits and the image loader that reads them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from calprompt.conventions import clean_classname, format_prompt

ImageLoader = Callable[[str], Image.Image]

__all__ = ["DatasetSplits", "ImageLoader", "Item", "clean_classname", "format_prompt", "open_rgb_image"]


def open_rgb_image(impath: str) -> Image.Image:
    """Open an image file as RGB, failing with a message that names the file and the fix."""
    path = Path(impath)
    if not path.is_file():
        raise FileNotFoundError(
            f"Image file not found: {path}. Check the dataset root and that the download was unpacked completely "
            "(`calprompt datasets check --root DIR NAME` lists every missing file)."
        )
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise OSError(f"Image file is unreadable or corrupt: {path} ({error}). Re-download or replace it.") from error


@dataclass(frozen=True)
class Item:
    """One labelled example.

    ``impath`` is an absolute file path, or a virtual id understood by the dataset's ``image_loader``
    (the toy world renders its images from such ids).
    """

    impath: str
    label: int
    classname: str


@dataclass(frozen=True)
class DatasetSplits:
    """Train/val/test items of one dataset with its class names (index = label) and zero-shot template."""

    name: str
    classnames: tuple[str, ...]
    train: tuple[Item, ...]
    val: tuple[Item, ...]
    test: tuple[Item, ...]
    template: str = "a photo of a {}."
    image_loader: ImageLoader = field(default=open_rgb_image, compare=False, repr=False)
    # ImageNet protocol: the validation split *is* the test split, so few-shot sampling leaves it whole
    # and base/novel subsetting treats it like test.
    val_is_test: bool = False
    # Listed image files that were absent and skipped; only ever non-empty with an explicit `skip_missing=True`.
    missing_files: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # How many of `missing_files` each split listed: ((split, count), ...) for train, val and test.
    missing_counts: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)
    # Files found beside the images but not read as items (e.g. notes.txt in a class folder), "path (why)".
    skipped_files: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def split(self, name: str) -> tuple[Item, ...]:
        """The items of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"Expected `split` to be one of 'train', 'val', 'test', got {name!r}.")
        return getattr(self, name)

    def prompts(self, template: str | None = None) -> list[str]:
        """One prompt per class, from ``template`` (default: the dataset's own), see `format_prompt`."""
        return [format_prompt(template or self.template, name) for name in self.classnames]

    def with_splits(self, **changes: object) -> DatasetSplits:
        """A copy with some fields replaced (e.g. few-shot train/val, or a base/novel class subset)."""
        return replace(self, **changes)
