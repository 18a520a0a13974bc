"""A tiny synthetic labelled image set rendered from ids (no files): for engine and method tests."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from calprompt.data.items import DatasetSplits, Item

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 80, 220), (230, 200, 40), (160, 60, 200), (40, 200, 210)]
NAMES = ["red blob", "green blob", "blue blob", "yellow blob", "purple blob", "cyan blob"]


def render(impath: str) -> Image.Image:
    """Deterministic 32x32 image: the class colour plus noise seeded by the id."""
    label = impath.split("/")[3]
    seed = int.from_bytes(hashlib.sha256(impath.encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[int(label)], dtype=np.float32)
    image = base + rng.normal(0, 40, size=(32, 32, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def synthetic_splits(num_classes: int = 4, per_class: int = 6) -> DatasetSplits:
    def items(split: str, n: int) -> tuple[Item, ...]:
        return tuple(
            Item(f"syn://{split}/{label}/{i}", label, NAMES[label]) for label in range(num_classes) for i in range(n)
        )

    return DatasetSplits(
        name="synthetic",
        classnames=tuple(NAMES[:num_classes]),
        train=items("train", per_class),
        val=items("val", 2),
        test=items("test", per_class),
        template="a photo of a {}.",
        image_loader=render,
    )
