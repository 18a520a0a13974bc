"""An on-disk cache of frozen image-encoder features, one entry per (encoder, data, transform, view).

Methods that leave the image encoder untouched see the same features every time a given image is given a given view,
so encoding once and sharing the result across methods and calibration variants removes most of their image cost.
An entry is a ``.npy`` array (memory-mapped on reuse) plus a JSON sidecar with its key and the sha256 of its rows.
The file name is the sha256 of the canonical JSON of the key, item ids and the images' file stamps (size and
modification time) included, so changing any part of the key (backbone, dataset, split, items, image files,
transform, view seed) addresses a different entry: nothing is ever overwritten by a different key. The rows'
checksum is verified when an entry is opened: `FeatureCache.get` refuses an edited or corrupt entry naming it, and
`FeatureCache.get_or_compute` recomputes it with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from calprompt._io import CorruptFileError, file_stamp, write_atomic
from calprompt._validation import check_positive_int, fail
from calprompt.data.items import ImageLoader, Item, open_rgb_image
from calprompt.data.transforms import ImageTransform
from calprompt.data.views import ImageViews, ItemDataset

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: keys include the images' file stamps, sidecars the rows' sha256
# numpy has no bfloat16: such tensors are stored as their int16 bit pattern and viewed back on load.
_BIT_VIEWS = {torch.bfloat16: torch.int16}


@dataclass(frozen=True)
class FeatureKey:
    """Everything the features of one split depend on.

    ``encoder_id`` must change whenever the image encoder's weights or code do (e.g. ``"ViT-B-16/openai"``);
    ``transform_id`` names the preprocessing (`ImageTransformConfig.identity`); ``view_seed`` is ``None`` for the
    deterministic test transform. ``content`` fingerprints the image files behind ``item_ids`` (their sizes and
    modification times, see `calprompt._io.file_stamp`); it is computed from the ids when not given.
    """

    encoder_id: str
    dataset: str
    split: str
    item_ids: tuple[str, ...]
    transform_id: str
    view_seed: int | None = None
    content: str | None = None

    def __post_init__(self) -> None:
        for name in ("encoder_id", "dataset", "split", "transform_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                fail(name, "a non-empty string", getattr(self, name))
        object.__setattr__(self, "item_ids", tuple(str(item_id) for item_id in self.item_ids))
        if self.view_seed is not None and (isinstance(self.view_seed, bool) or not isinstance(self.view_seed, int)):
            fail("view_seed", "an integer or None", self.view_seed)
        if self.content is None:
            stamps = "\n".join(file_stamp(item_id) for item_id in self.item_ids)
            object.__setattr__(self, "content", hashlib.sha256(stamps.encode()).hexdigest())

    def summary(self) -> dict[str, object]:
        """The key with the item ids replaced by their count and digest (what the sidecar stores)."""
        items_digest = hashlib.sha256("\n".join(self.item_ids).encode()).hexdigest()
        return {
            "encoder_id": self.encoder_id,
            "dataset": self.dataset,
            "split": self.split,
            "num_items": len(self.item_ids),
            "items_sha256": items_digest,
            "content_sha256": self.content,
            "transform_id": self.transform_id,
            "view_seed": self.view_seed,
        }

    def digest(self) -> str:
        canonical = json.dumps({"version": FORMAT_VERSION, **self.summary()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def item_ids(items: Sequence[Item], root: str | Path | None = None) -> tuple[str, ...]:
    """Ids for cache keys: image paths relative to ``root`` when given (so a moved data folder keeps its cache)."""
    if root is None:
        return tuple(item.impath for item in items)
    base = os.path.abspath(root)
    return tuple(os.path.relpath(item.impath, base) if os.path.isabs(item.impath) else item.impath for item in items)


class FeatureCache:
    """Features on disk under ``root``; see the module docstring for the format and keys."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def paths(self, key: FeatureKey) -> tuple[Path, Path]:
        """The array file and the JSON sidecar of ``key``."""
        digest = key.digest()
        folder = self.root / digest[:2]
        return folder / f"{digest}.npy", folder / f"{digest}.json"

    def __contains__(self, key: FeatureKey) -> bool:
        array_path, meta_path = self.paths(key)
        return array_path.is_file() and meta_path.is_file()

    def get(self, key: FeatureKey) -> Tensor | None:
        """The cached features of ``key`` (a CPU tensor backed by the file), or ``None`` if absent.

        An entry that is unreadable, belongs to another key or whose rows no longer match their checksum raises
        `calprompt._io.CorruptFileError` naming the file.
        """
        array_path, meta_path = self.paths(key)
        if not (array_path.is_file() and meta_path.is_file()):
            return None
        fix = "Delete it to recompute (or let the next run recompute it)."
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CorruptFileError(f"Feature cache sidecar {meta_path} is corrupt ({error}). {fix}") from error
        if not isinstance(meta, dict) or meta.get("key") != key.summary():
            raise CorruptFileError(
                f"Feature cache entry {meta_path} does not belong to the requested key (a corrupt or foreign file). "
                f"{fix}"
            )
        dtype = getattr(torch, str(meta.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise CorruptFileError(f"Feature cache entry {meta_path} names no torch dtype. {fix}")
        try:
            # mmap_mode="c" maps the file copy-on-write: the array is writable (so torch.from_numpy needs no copy
            # and raises no read-only warning), while the file never changes.
            array = np.load(array_path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise CorruptFileError(f"Feature cache entry {array_path} is unreadable ({error}). {fix}") from error
        if _rows_sha256(array) != meta.get("rows_sha256"):
            raise CorruptFileError(
                f"Feature cache entry {array_path} does not match the checksum of its rows (edited or corrupt). {fix}"
            )
        tensor = torch.from_numpy(array)
        if dtype in _BIT_VIEWS:
            tensor = tensor.view(dtype)
        if tensor.shape[0] != len(key.item_ids) or tensor.dtype != dtype:
            raise CorruptFileError(f"Feature cache entry {array_path} does not match its sidecar. {fix}")
        return tensor

    def put(self, key: FeatureKey, features: Tensor) -> Tensor:
        """Store ``features`` (first dimension = one row per item) and return them as read back from disk."""
        if not isinstance(features, Tensor) or features.ndim < 1 or features.shape[0] != len(key.item_ids):
            got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            fail("features", f"a tensor with {len(key.item_ids)} rows (one per item)", got)
        array_path, meta_path = self.paths(key)
        array_path.parent.mkdir(parents=True, exist_ok=True)
        stored = features.detach().to("cpu").contiguous()
        dtype_name = str(stored.dtype).removeprefix("torch.")
        if stored.dtype in _BIT_VIEWS:
            stored = stored.view(_BIT_VIEWS[stored.dtype])
        array = stored.numpy()

        def write_array(temp: Path) -> None:
            with temp.open("wb") as stream:
                np.save(stream, array, allow_pickle=False)

        meta = {
            "format_version": FORMAT_VERSION,
            "key": key.summary(),
            "dtype": dtype_name,
            "shape": list(array.shape),
            "rows_sha256": _rows_sha256(array),
        }
        # The sidecar is written last: an entry counts as present only once both files exist. Not synced to disk
        # (a toy run writes 200 entries): a torn entry fails its checksum when opened and is recomputed.
        write_atomic(array_path, write_array, durable=False)
        write_atomic(
            meta_path, lambda temp: temp.write_text(json.dumps(meta, indent=1), encoding="utf-8"), durable=False
        )
        cached = self.get(key)
        assert cached is not None  # just written
        return cached

    def get_or_compute(self, key: FeatureKey, compute: Callable[[], Tensor], *, stacklevel: int = 2) -> Tensor:
        """Cached features of ``key``, computing and storing them with ``compute()`` on a miss.

        A corrupt entry is recomputed with a warning; ``stacklevel`` is `warnings.warn`'s, counted from here (2: the
        warning names the caller), so that a wrapper can name its own caller.
        """
        try:
            cached = self.get(key)
        except CorruptFileError as error:
            warnings.warn(f"{error} Recomputing it.", stacklevel=stacklevel)
            cached = None
        if cached is not None:
            logger.debug("Feature cache hit %s (%s %s)", key.digest()[:12], key.dataset, key.split)
            return cached
        logger.info("Encoding %d %s/%s images for the feature cache.", len(key.item_ids), key.dataset, key.split)
        return self.put(key, compute())


def cached_or_computed(
    cache: FeatureCache | None, key: Callable[[], FeatureKey], compute: Callable[[], Tensor]
) -> Tensor:
    """``compute()`` without a cache, else `FeatureCache.get_or_compute` of ``key()``: the one cache-or-compute step of
    training and evaluation. ``key`` is called only with a cache, since building a key stats every image file."""
    if cache is None:
        return compute()
    return cache.get_or_compute(key(), compute, stacklevel=3)  # a corrupt entry's warning names our caller


def _rows_sha256(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (row order included)."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def default_encode_batch_size(device: str | torch.device) -> int:
    """Images per batch of the frozen image encoder: 64 on the CPU, where smaller batches stay in the caches (on 2
    cores, 256-image batches of the toy encoder are ~15 % slower per image), 256 on accelerators."""
    return 64 if torch.device(device).type == "cpu" else 256


def view_batches(
    items: Sequence[Item],
    transform: Callable[[Image.Image], Tensor],
    *,
    loader: ImageLoader = open_rgb_image,
    view_seed: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> Iterator[Tensor]:
    """Batches (B, 3, S, S) of every item's view (seeded when ``view_seed`` is given, see `calprompt.data.views`) in
    item order, on ``device``.

    A transform from `build_train_transform` / `build_test_transform` runs batched on ``device``
    (:class:`ImageViews`); any other PIL transform runs per image (`ItemDataset`, with ``num_workers``).
    """
    check_positive_int(batch_size, "batch_size")
    if not items:
        fail("items", "a non-empty sequence", items)
    if isinstance(transform, ImageTransform):
        views = ImageViews(items, transform.config, train=transform.train, loader=loader, num_workers=num_workers)
        yield from views.batches(batch_size, view_seed, device)
        return
    dataset = ItemDataset(items, transform, loader=loader, view_seed=view_seed)
    for images, _labels, _indices in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        yield images.to(device)


@torch.no_grad()
def encode_items(
    items: Sequence[Item],
    encode_fn: Callable[[Tensor], Tensor],
    transform: Callable[[Image.Image], Tensor],
    **view_options: Any,
) -> Tensor:
    """Encode every item's view in no-grad batches: ``(N, D)`` float32 features on the CPU, in item order.

    ``view_options`` are `view_batches`'s (``loader``, ``view_seed``, ``batch_size``, ``num_workers``, ``device``).
    """
    batches = view_batches(items, transform, **view_options)
    return torch.cat([encode_fn(images).float().cpu() for images in batches])  # (B, D) each


@torch.no_grad()
def encode_views(
    views: ImageViews,
    encode_fn: Callable[[Tensor], Tensor],
    *,
    view_seed: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Encode every item's view of ``views`` in no-grad batches made on ``device``: (N, D) float32 on the CPU."""
    return torch.cat([encode_fn(images).float().cpu() for images in views.batches(batch_size, view_seed, device)])
