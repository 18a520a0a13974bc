"""A torch ``Dataset`` over items whose random augmentations can be replayed exactly.

With a ``view_seed``, item ``i``'s augmentation is drawn from a generator seeded by ``(view_seed, i)`` alone, so two
processes, two worker layouts, or an on-line pass and a feature-cache pass see byte-identical views. One
``view_seed`` per epoch (`derive_view_seed`) gives every image one fresh random view per epoch, as on-line
augmentation does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from calprompt._validation import fail
from calprompt.data.items import ImageLoader, Item, open_rgb_image

_SEED_MASK = (1 << 63) - 1


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts``, the same in every process."""
    # sha256 rather than hash(): Python's str hash is salted per process.
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & _SEED_MASK


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        fail(name, "an integer >= 0", value)
    return value


def derive_view_seed(run_seed: int, epoch: int) -> int:
    """The view seed of ``epoch`` in a run seeded with ``run_seed`` (distinct per epoch, same in every process)."""
    return stable_seed("view", _check_int(run_seed, "run_seed"), _check_int(epoch, "epoch"))


def item_view_seed(view_seed: int, index: int) -> int:
    """The torch seed that draws the augmentation of item ``index`` under ``view_seed``."""
    return stable_seed("item", _check_int(view_seed, "view_seed"), index)


class ItemDataset(Dataset[tuple[Tensor, int, int]]):
    """``(image_tensor, label, index)`` for each item, read with ``loader`` and passed through ``transform``.

    Without ``view_seed`` the transform draws from torch's global generator (ordinary on-line augmentation);
    with it, each item's draw is replayable and the global generator is left untouched.
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
        self.view_seed = None if view_seed is None else _check_int(view_seed, "view_seed")

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
