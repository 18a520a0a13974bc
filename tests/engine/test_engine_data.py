"""Training data: decoded images are reused across epochs within the memory budget, and the views do not change."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from calprompt.data import ImageTransformConfig
from calprompt.engine.data import TrainingData
from calprompt.engine.train import TrainConfig, epoch_batches
from tests.synthetic import synthetic_splits


def _data(budget: int) -> tuple[TrainingData, Counter]:
    splits = synthetic_splits()
    calls: Counter = Counter()

    def counting_loader(impath: str):
        calls[impath] += 1
        return splits.image_loader(impath)

    data = TrainingData(
        splits.train,
        lambda images: images.flatten(1)[:, :4],
        "test-encoder",
        ImageTransformConfig(image_size=32, train_scale=(0.5, 1.0)),
        loader=counting_loader,
        decoded_memory_bytes=budget,
    )
    return data, calls


def _epochs(data: TrainingData, epochs: int = 3) -> list[torch.Tensor]:
    config = TrainConfig(epochs=epochs, batch_size=8, lr=0.1, seed=2)
    views = []
    for epoch in range(epochs):
        batches = epoch_batches(len(data.items), config.batch_size, config.seed, epoch)
        views += [images for images, _ in data.image_batches(epoch, batches, config)]
        views.append(data.frozen_features(epoch, config))
    return views


@pytest.mark.parametrize(("budget", "decodes"), [(2**30, 1), (0, 6)])  # 3 epochs x (batches + feature pass)
def test_decoded_images_are_reused_within_the_budget(budget, decodes):
    data, calls = _data(budget)
    _epochs(data)
    assert set(calls.values()) == {decodes}


def test_reuse_leaves_every_augmented_view_unchanged():
    reused, _ = _data(2**30)
    fresh, _ = _data(0)
    assert all(torch.equal(a, b) for a, b in zip(_epochs(reused), _epochs(fresh), strict=True))


def test_budget_bounds_what_is_kept():
    one_image = 32 * 32 * 3
    data, calls = _data(2 * one_image)
    _epochs(data, epochs=2)
    assert sorted(calls.values()).count(1) == 2 and len(data._decoded) == 2
