"""A tiny synthetic labelled image set rendered from ids (no files): for engine and method tests."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.data.items import DatasetSplits, Item
from calprompt.data.transforms import ImageTransformConfig
from calprompt.engine.data import TrainingData

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


SYNTHETIC_TRANSFORM = ImageTransformConfig(image_size=32, train_scale=(0.5, 1.0))


def synthetic_training_data(backbone, splits: DatasetSplits, **extra) -> TrainingData:
    """The training items of ``splits`` for the training loop on ``backbone``, with the dataset template's zero-shot
    text features; ``extra`` sets further `TrainingData` fields (``cache``, ``outliers``, ...)."""
    return TrainingData(
        splits.train,
        backbone.encode_image,
        backbone.identity,
        SYNTHETIC_TRANSFORM,
        loader=splits.image_loader,
        dataset_name="synthetic",
        zero_shot_text_features=zero_shot_text_features(backbone, splits.classnames, splits.template),
        **extra,
    )
