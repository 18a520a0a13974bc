"""Test-time views of one test image, as TPT makes them, seeded per image so that a run is reproducible.

View 0 is the image as every evaluation sees it (resize + center crop); views 1..N-1 are random resized crops with
a horizontal flip (TPT's pre-augmentation), with AugMix on top where the public code adds it (every dataset but the
ImageNet family). Each image's draws come from a generator seeded by ``(run seed, image index)`` alone, so the views
of an image do not depend on which images share its batch, on the batch size, or on where a resumed run restarts.

Where this departs from the public code (azshue/TPT ``data/datautils.py``, ``AugMixAugmenter``): crops are resampled
from the decoded image with torch's antialiased kernel (`calprompt.data.augment`) rather than PIL's; AugMix is
torchvision's (``all_ops=False``: the same geometric and histogram operations as TPT's ``augmentations`` list,
severity 1, width 3, depth 1-3, Dirichlet(1) and Beta(1) weights) applied to the 8-bit crop, where TPT mixes PIL
images after its own op implementations. docs/test-time.md lists these departures.
"""

from __future__ import annotations

import torch
from torch import Tensor

import calprompt.data.augment as augment
from calprompt.data.transforms import ImageTransformConfig
from calprompt.data.views import stable_seed

#: Datasets whose views TPT makes without AugMix (its single-letter set ids: ImageNet and its shifted variants).
IMAGENET_FAMILY = ("imagenet", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def uses_augmix(dataset: str) -> bool:
    """Whether TPT's views of ``dataset`` add AugMix (fine-grained sets) or not (the ImageNet family)."""
    return dataset.lower().replace("-", "_") not in IMAGENET_FAMILY


def image_view_seed(run_seed: int, image_index: int) -> int:
    """The seed of the views of test image ``image_index`` in a run seeded with ``run_seed``."""
    return stable_seed("test-time views", run_seed, image_index)


def tuning_views(
    image: Tensor,
    views: int,
    seed: int,
    config: ImageTransformConfig,
    *,
    augmix: bool,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Normalised views (views, 3, S, S) of one decoded uint8 image (3, H, W): the test view first, then random
    resized crops with flips (and AugMix), drawn from ``seed`` (`image_view_seed`)."""
    height, width = image.shape[1:]
    size = config.image_size
    generator, draw = torch.Generator().manual_seed(seed), torch.empty(1)
    boxes = [
        augment.sample_train_box(generator, height, width, config.train_scale, config.hflip, draw)
        for _ in range(views - 1)
    ]
    pixels = image.unsqueeze(0).to(device)  # (1, 3, H, W) uint8
    out = torch.empty(views, 3, size, size, device=device)
    rows, columns = augment.eval_matrices(height, width, size, config.interpolation)
    out[:1] = augment.resample(pixels, rows, columns)
    if boxes:
        rows, columns = augment.train_matrices(boxes, height, width, size, config.interpolation)
        crops = augment.resample(pixels.expand(len(boxes), -1, -1, -1), rows, columns)  # (N - 1, 3, S, S)
        out[1:] = _augmix(crops, int(torch.randint(0, 2**62, (1,), generator=generator))) if augmix else crops
    return augment.normalize(out, config.mean, config.std)


def _augmix(crops: Tensor, seed: int) -> Tensor:
    """torchvision's AugMix (TPT's severity 1 and operations) on each crop, as 8-bit images, from ``seed``."""
    from torchvision.transforms import AugMix

    mix = AugMix(severity=1, all_ops=False)
    as_bytes = (crops.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    threads = torch.get_num_threads()
    # AugMix runs dozens of tiny ops per crop: one thread, since intra-op threads on a busy CPU made them ~19x slower
    # (same results: 8-bit outputs of the same ops)
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # AugMix draws from the global generator: fork it, never advance it
            torch.manual_seed(seed)
            mixed = torch.stack([mix(crop) for crop in as_bytes])
    finally:
        torch.set_num_threads(threads)
    return mixed.to(crops.device).float() / 255.0
