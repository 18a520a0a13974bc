"""Augmented views of items that can be replayed exactly: batched (:class:`ImageViews`) or per image (`ItemDataset`).

With a ``view_seed``, item ``i``'s augmentation is drawn from a generator seeded by ``(view_seed, i)`` alone, so two
processes, two batch layouts, or an on-line pass and a feature-cache pass see the same views. One ``view_seed`` per
epoch (`derive_view_seed`) gives every image one fresh random view per epoch, as on-line augmentation does.

:class:`ImageViews` decodes each image once and keeps it (few-shot training sets are small), draws each item's crop
and flip from its own ``torch.Generator`` (never re-seeding the global one), and resamples whole batches of tensors
on the run's device (`calprompt.data.augment`). Its draws are exactly those of the per-image torchvision transform
under the same item seed, so both paths crop and flip every item identically.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import calprompt.data.augment as augment
from calprompt._validation import check_non_negative_int, check_positive_int, fail
from calprompt.data.items import ImageLoader, Item, open_rgb_image
from calprompt.data.transforms import ImageTransformConfig

logger = logging.getLogger(__name__)
# Decoded training images kept in memory at most (uint8); beyond it, images are decoded again when used.
DEFAULT_DECODED_BUDGET_MB = 4096

_SEED_MASK = (1 << 63) - 1


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts``, the same in every process."""
    # sha256 rather than hash(): Python's str hash is salted per process.
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & _SEED_MASK


def derive_view_seed(run_seed: int, epoch: int) -> int:
    """The view seed of ``epoch`` in a run seeded with ``run_seed`` (distinct per epoch, same in every process)."""
    return stable_seed("view", check_non_negative_int(run_seed, "run_seed"), check_non_negative_int(epoch, "epoch"))


def item_view_seed(view_seed: int, index: int) -> int:
    """The torch seed that draws the augmentation of item ``index`` under ``view_seed``."""
    return stable_seed("item", check_non_negative_int(view_seed, "view_seed"), index)


class ItemDataset(Dataset[tuple[Tensor, int, int]]):
    """``(image_tensor, label, index)`` for each item, read with ``loader`` and passed through ``transform``.

    The per-image path, for any PIL transform. Without ``view_seed`` the transform draws from torch's global
    generator (ordinary on-line augmentation); with it, each item's draw is replayable and the global generator is
    left untouched (at the price of re-seeding it per item inside ``fork_rng``: prefer :class:`ImageViews`).
    """

    def __init__(
        self,
        items: Sequence[Item],
        transform: Callable[[Image.Image], Tensor],
        loader: ImageLoader = open_rgb_image,
        view_seed: int | None = None,
    ) -> None:
        self.items = tuple(items)
        self.transform = transform
        self.loader = loader
        self.view_seed = None if view_seed is None else check_non_negative_int(view_seed, "view_seed")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        item = self.items[index]
        image = self.loader(item.impath)
        if self.view_seed is None:
            return self.transform(image), item.label, index
        with torch.random.fork_rng(devices=[]):  # CPU generator only: torchvision's v1 transforms draw there
            torch.manual_seed(item_view_seed(self.view_seed, index))
            tensor = self.transform(image)
        return tensor, item.label, index


def pil_to_uint8(image: Image.Image) -> Tensor:
    """An RGB PIL image as a uint8 tensor (3, H, W)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even an RGB image
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class _Decoded(Dataset[Tensor]):
    def __init__(self, items: Sequence[Item], loader: ImageLoader) -> None:
        self.items, self.loader = items, loader

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tensor:
        return pil_to_uint8(self.loader(self.items[index].impath))


class ImageViews:
    """Batches of training or test views of a fixed item list, from images decoded once.

    Args:
        items: the items; ``batch`` takes indices into them.
        config: the backbone's transform settings (size, normalisation, resampling, crop range, flip).
        train: random resized crop + flip (CoOp's training views), or resize + center crop (test views).
        loader: reads an item's image (a file, or a toy id).
        num_workers: worker processes for the one decoding pass (they help for JPEG files, not for toy renders).
        decoded_budget_mb: decoded images kept at most (MB); the rest are decoded again each time they are used.
    """

    def __init__(
        self,
        items: Sequence[Item],
        config: ImageTransformConfig,
        *,
        train: bool,
        loader: ImageLoader = open_rgb_image,
        num_workers: int = 0,
        decoded_budget_mb: int = DEFAULT_DECODED_BUDGET_MB,
    ) -> None:
        self.items = tuple(items)
        if not self.items:
            fail("items", "a non-empty sequence", items)
        self.config = config
        self.train = train
        self.loader = loader
        self.num_workers = check_non_negative_int(num_workers, "num_workers")
        self.decoded_budget_mb = check_positive_int(decoded_budget_mb, "decoded_budget_mb")
        self._kept: list[Tensor | None] = [None] * len(self.items)
        self._kept_bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def images(self, indices: Sequence[int]) -> list[Tensor]:
        """The decoded uint8 images (3, H, W) of ``indices``: decoded on first use (with the workers), kept while the
        budget allows, so a training set is decoded once per run and a test set once per pass."""
        missing = sorted({i for i in indices if self._kept[i] is None})
        fresh: dict[int, Tensor] = {}
        if missing:
            dataset = _Decoded([self.items[i] for i in missing], self.loader)
            workers = min(self.num_workers, len(missing))
            # Without workers a plain loop: a DataLoader's per-item bookkeeping costs about as much as a toy render.
            decoded = (
                DataLoader(  # its own generator: iterating must not draw from the global one
                    dataset, batch_size=None, num_workers=workers, generator=torch.Generator().manual_seed(0)
                )
                if workers
                else map(dataset.__getitem__, range(len(dataset)))
            )
            budget = self.decoded_budget_mb * 2**20
            for index, image in zip(missing, decoded, strict=True):
                fresh[index] = image
                if self._kept_bytes + image.numel() <= budget:
                    self._kept[index] = image
                    self._kept_bytes += image.numel()
        return [self._kept[i] if self._kept[i] is not None else fresh[i] for i in indices]

    def boxes(
        self, indices: Sequence[int], shapes: Sequence[tuple[int, int]], view_seed: int | None
    ) -> list[augment.CropBox]:
        """Each item's training crop and flip for its image (height, width), from a generator seeded by
        ``(view_seed, item)``.

        Without ``view_seed`` the item seeds are drawn from torch's global generator (ordinary on-line augmentation).
        """
        generator, buffer = torch.Generator(), torch.empty(1)
        scale, hflip = self.config.train_scale, self.config.hflip
        boxes = []
        for index, (height, width) in zip(indices, shapes, strict=True):
            seed = (
                item_view_seed(view_seed, index) if view_seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            )
            generator.manual_seed(seed)
            boxes.append(augment.sample_train_box(generator, height, width, scale, hflip, buffer))
        return boxes

    def batch(
        self, indices: Sequence[int] | Tensor, view_seed: int | None = None, device: str | torch.device = "cpu"
    ) -> Tensor:
        """Normalised views (B, 3, S, S) of ``indices`` on ``device`` (``view_seed``: training views only)."""
        indices = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
        if view_seed is not None:
            check_non_negative_int(view_seed, "view_seed")
        config = self.config
        size = config.image_size
        decoded = self.images(indices)
        boxes = self.boxes(indices, [tuple(image.shape[1:]) for image in decoded], view_seed) if self.train else None
        out = torch.empty(len(indices), 3, size, size, device=device)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for position, image in enumerate(decoded):
            by_shape.setdefault(tuple(image.shape[1:]), []).append(position)
        for (height, width), positions in by_shape.items():
            images = torch.stack([decoded[p] for p in positions]).to(device)  # (n, 3, H, W) uint8
            if boxes is not None:
                group = [boxes[p] for p in positions]
                rows, columns = augment.train_matrices(group, height, width, size, config.interpolation)
            else:
                rows, columns = augment.eval_matrices(height, width, size, config.interpolation)
            out[positions] = augment.resample(images, rows, columns)
        return augment.normalize(out, config.mean, config.std)

    def batches(
        self, batch_size: int, view_seed: int | None = None, device: str | torch.device = "cpu"
    ) -> Iterator[Tensor]:
        """:meth:`batch` over every item in order, ``batch_size`` at a time."""
        check_positive_int(batch_size, "batch_size")
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))), view_seed, device)
