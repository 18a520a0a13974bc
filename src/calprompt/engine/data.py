"""What the training loop consumes: the labelled training items, their augmented views and frozen features.

The same seeded views feed both paths: the feature-cached path encodes every item's view of an epoch once in large
no-grad batches (and stores it, so every calibration variant and method with the same seed reuses it), the on-line
path reads the same views batch by batch. Images are decoded once per run and augmented in batches on the run's
device (`calprompt.data.views.ImageViews`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from calprompt.calibration.outliers import OutlierPool
from calprompt.data.features import (
    FeatureCache,
    FeatureKey,
    cached_or_computed,
    encode_items,
    encode_views,
    item_ids,
)
from calprompt.data.items import ImageLoader, Item, open_rgb_image
from calprompt.data.transforms import ImageTransform, ImageTransformConfig, build_train_transform
from calprompt.data.views import ImageViews, ItemDataset, derive_view_seed

if TYPE_CHECKING:
    from calprompt.engine.config import TrainConfig


@dataclass
class TrainingData:
    """Training items plus everything needed to turn them into images or frozen features.

    Args:
        items: the (few-shot, base-class) training items; labels index the method's class list.
        encode_image: the frozen image encoder (``backbone.encode_image``), used for cached features.
        encoder_id: names the encoder's weights for feature-cache keys.
        zero_shot_text_features: (C, D) frozen text features of the training classes (dataset template), needed by
            objectives that use zero-shot moments or logits.
        cache: an on-disk feature cache shared across runs; ``None`` keeps features in memory for this run only.
    """

    items: Sequence[Item]
    encode_image: Callable[[Tensor], Tensor]
    encoder_id: str
    transform: ImageTransformConfig
    loader: ImageLoader = open_rgb_image
    dataset_name: str = "custom"
    zero_shot_text_features: Tensor | None = None
    outliers: OutlierPool | None = None  # DOR's outlier names and frozen features, for objectives that need them
    cache: FeatureCache | None = None
    num_workers: int = 0
    _memory: dict[int, Tensor] = field(default_factory=dict, repr=False)
    _key: FeatureKey | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.items = tuple(self.items)
        if not self.items:
            raise ValueError("Expected `items` to be a non-empty training set, got 0 items.")
        self.labels = torch.tensor([item.label for item in self.items], dtype=torch.long)
        self._train_transform = build_train_transform(self.transform)
        self._views = ImageViews(
            self.items, self.transform, train=True, loader=self.loader, num_workers=self.num_workers
        )

    @property
    def batched_views(self) -> bool:
        """False only when the train transform is a plain per-image callable (the per-image reference path)."""
        return isinstance(self._train_transform, ImageTransform)

    def _cache_key(self) -> FeatureKey:
        """The feature-cache key of the training views without their view seed: the item ids and the images' file
        stamps read once per run, not once per epoch (a stat per image)."""
        if self._key is None:
            self._key = FeatureKey(
                self.encoder_id, self.dataset_name, "train", item_ids(self.items), self.transform.identity(train=True)
            )
        return self._key

    def view_seed(self, seed: int, view_epoch: int) -> int:
        return derive_view_seed(seed, view_epoch)

    def frozen_features(self, view_epoch: int, config: TrainConfig) -> Tensor:
        """(N, D) frozen image features of every item's view for ``view_epoch``, from the cache when present."""
        if view_epoch in self._memory:
            return self._memory[view_epoch]
        view_seed = self.view_seed(config.seed, view_epoch)

        def compute() -> Tensor:
            if self.batched_views:
                return encode_views(
                    self._views,
                    self.encode_image,
                    view_seed=view_seed,
                    batch_size=config.encode_batch_size,
                    device=config.device,
                )
            return encode_items(
                self.items,
                self.encode_image,
                self._train_transform,
                loader=self.loader,
                view_seed=view_seed,
                batch_size=config.encode_batch_size,
                num_workers=self.num_workers,
                device=config.device,
            )

        features = cached_or_computed(self.cache, lambda: replace(self._cache_key(), view_seed=view_seed), compute)
        if config.distinct_views is not None:  # views repeat: keep them in memory
            self._memory[view_epoch] = features
        return features

    def image_batches(
        self, view_epoch: int, batches: Sequence[Tensor], config: TrainConfig
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, indices) per batch, with the same seeded views as :meth:`frozen_features`."""
        view_seed = self.view_seed(config.seed, view_epoch)
        if self.batched_views:
            for batch in batches:
                yield self._views.batch(batch, view_seed, config.device), batch
            return
        dataset = ItemDataset(self.items, self._train_transform, loader=self.loader, view_seed=view_seed)
        loader = DataLoader(dataset, batch_sampler=[batch.tolist() for batch in batches], num_workers=self.num_workers)
        for images, _labels, indices in loader:
            yield images, indices
