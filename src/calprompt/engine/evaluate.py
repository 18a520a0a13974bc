"""The one evaluation loop: logits of a method on a list of items, text features computed once per class list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt.data.features import (
    FeatureCache,
    FeatureKey,
    cached_or_computed,
    default_encode_batch_size,
    encode_items,
    item_ids,
    view_batches,
)
from calprompt.data.items import ImageLoader, Item, open_rgb_image
from calprompt.data.transforms import ImageTransformConfig, build_test_transform
from calprompt.engine.precision import autocast
from calprompt.methods.base import PromptMethod


@dataclass
class Predictions:
    """Logits (N, C) and labels (N,) on the CPU, plus the class text features (C, D) they were computed with and the
    L2-normalised image features (N, D) behind the logits (what ProCal's proximity and PIECE measure distances on)."""

    logits: Tensor
    labels: Tensor
    text_features: Tensor | None  # None when the prompts depend on the image (CoCoOp)
    image_features: Tensor | None = None


@torch.no_grad()
def predict(
    method: PromptMethod,
    items: Sequence[Item],
    transform: ImageTransformConfig,
    *,
    loader: ImageLoader = open_rgb_image,
    batch_size: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    cache: FeatureCache | None = None,
    cache_tag: tuple[str, str] = ("custom", "test"),
    num_workers: int = 0,
) -> Predictions:
    """Evaluate ``method`` (in eval mode) on ``items`` with the deterministic test transform.

    Methods that leave the image encoder untouched are evaluated on frozen image features (cached on disk when a
    ``cache`` is given, keyed by ``cache_tag`` = (dataset, split)); their text features are encoded once. Test views
    are made in batches (`calprompt.data.features.view_batches`); ``batch_size`` defaults to
    `default_encode_batch_size` of ``device``.
    """
    batch_size = default_encode_batch_size(device) if batch_size is None else batch_size
    method.eval()
    items = tuple(items)
    labels = torch.tensor([item.label for item in items], dtype=torch.long)
    test_transform = build_test_transform(transform)
    with autocast(device, precision):
        text = None if method.text_depends_on_image else F.normalize(method.encode_text(), dim=-1)
        if method.image_encoder_untouched:

            def compute() -> Tensor:
                return encode_items(
                    items,
                    method.backbone.encode_image,
                    test_transform,
                    loader=loader,
                    batch_size=batch_size,
                    num_workers=num_workers,
                    device=device,
                )

            def key() -> FeatureKey:
                return FeatureKey(
                    method.backbone.identity,
                    cache_tag[0],
                    cache_tag[1],
                    item_ids(items),
                    transform.identity(train=False),
                    None,
                )

            features = cached_or_computed(cache, key, compute)
            chunks, image_chunks = [], []
            for start in range(0, len(items), batch_size):
                batch = F.normalize(features[start : start + batch_size].to(device).float(), dim=-1)
                image_chunks.append(batch.float().cpu())
                if text is None:
                    chunks.append(method(image_features=batch).logits.float().cpu())
                else:
                    chunks.append(method.logits(method.image_head(batch), text).float().cpu())
        else:
            chunks, image_chunks = [], []
            batches = view_batches(
                items, test_transform, loader=loader, batch_size=batch_size, num_workers=num_workers, device=device
            )
            for images in batches:
                if text is None:
                    output = method(images)
                    chunks.append(output.logits.float().cpu())
                    image_chunks.append(output.image_features.float().cpu())
                else:
                    image_features = F.normalize(method.encode_image(images), dim=-1)
                    image_chunks.append(image_features.float().cpu())  # before any head, as the cached branch
                    chunks.append(method.logits(method.image_head(image_features), text).float().cpu())
    image_features = torch.cat(image_chunks)
    return Predictions(torch.cat(chunks), labels, None if text is None else text.float().cpu(), image_features)
