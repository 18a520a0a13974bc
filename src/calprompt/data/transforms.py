"""Image transforms of the CoOp protocol, parameterised per backbone.

Train: RandomResizedCrop(scale 0.08-1, bicubic) + horizontal flip + CLIP normalisation (Dassl's
``random_resized_crop, random_flip, normalize``). Test: resize the short side + center crop + normalisation
(CLIP's own preprocessing).

The builders return an :class:`ImageTransform`: a torchvision ``Compose`` that works on one PIL image (drawing from
torch's global generator) and also names its settings, so that `calprompt.data.views.ImageViews` can apply the same
transform to batches of decoded tensors (`calprompt.data.augment`), with per-item generators and on any device.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from torchvision import transforms as T

from calprompt._validation import check_choice, check_positive_int, fail
from calprompt.conventions import CLIP_MEAN, CLIP_STD

_INTERPOLATIONS = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class ImageTransformConfig:
    """How a backbone wants its images: size, normalisation, resampling, and the training crop range."""

    image_size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"
    train_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.image_size, "image_size")
        check_choice(self.interpolation, "interpolation", tuple(_INTERPOLATIONS))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, tuple | list) or len(value) != 3:
                fail(name, "three numbers (one per RGB channel)", value)
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if any(v <= 0 for v in self.std):
            fail("std", "three numbers > 0", self.std)
        scale = self.train_scale
        if not isinstance(scale, tuple | list) or len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            fail("train_scale", "(low, high) with 0 < low <= high <= 1", scale)
        object.__setattr__(self, "train_scale", (float(scale[0]), float(scale[1])))

    @classmethod
    def from_preprocess(cls, preprocess: Any) -> ImageTransformConfig:
        """Build from a backbone's preprocessing description (e.g. ``calprompt.clip.Preprocess``; duck-typed)."""
        return cls(
            image_size=preprocess.image_size,
            mean=tuple(preprocess.mean),
            std=tuple(preprocess.std),
            interpolation=getattr(preprocess, "interpolation", "bicubic"),
            train_scale=tuple(getattr(preprocess, "train_crop_scale", (0.08, 1.0))),
        )

    def identity(self, train: bool) -> str:
        """A stable string naming the transform (feature-cache keys include it)."""
        fields = {**asdict(self), "kind": "train" if train else "test"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


class ImageTransform(T.Compose):
    """A per-image torchvision pipeline that also records what it is (``config``, ``train``) for the batched path."""

    def __init__(self, steps: list[Any], config: ImageTransformConfig, train: bool) -> None:
        super().__init__(steps)
        self.config = config
        self.train = train


def build_train_transform(config: ImageTransformConfig | None = None) -> ImageTransform:
    """RandomResizedCrop + optional horizontal flip + ToTensor + Normalize, on RGB PIL images."""
    config = config or ImageTransformConfig()
    steps: list[Any] = [
        T.RandomResizedCrop(
            config.image_size, scale=config.train_scale, interpolation=_INTERPOLATIONS[config.interpolation]
        )
    ]
    if config.hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(config.mean, config.std)]
    return ImageTransform(steps, config, train=True)


def build_test_transform(config: ImageTransformConfig | None = None) -> ImageTransform:
    """Resize the short side to ``image_size`` + center crop + ToTensor + Normalize (deterministic)."""
    config = config or ImageTransformConfig()
    return ImageTransform(
        [
            T.Resize(config.image_size, interpolation=_INTERPOLATIONS[config.interpolation]),
            T.CenterCrop(config.image_size),
            T.ToTensor(),
            T.Normalize(config.mean, config.std),
        ],
        config,
        train=False,
    )
