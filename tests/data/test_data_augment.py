"""Batched augmentation against torchvision's per-image transforms, given the same sampled parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from calprompt.data import ImageTransformConfig, Item, build_test_transform, build_train_transform, item_view_seed
from calprompt.data.augment import CropBox, eval_matrices, resample, resize_matrix, sample_train_box, train_matrices
from calprompt.data.views import ImageViews, pil_to_uint8

MODES = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}
SHAPES = [(32, 32), (40, 57), (57, 40), (6, 64)]  # (6, 64): outside the ratio range, RandomResizedCrop falls back


def random_image(height: int, width: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.5, 1.0)])
@pytest.mark.parametrize("shape", SHAPES)
def test_crop_and_flip_draws_are_torchvisions_under_the_same_seed(shape, scale):
    image = random_image(*shape, seed=0)
    crop, flip = T.RandomResizedCrop(16, scale=scale), T.RandomHorizontalFlip()
    buffer = torch.empty(1)
    for seed in range(40):
        torch.manual_seed(seed)
        top, left, h, w = crop.get_params(image, list(crop.scale), list(crop.ratio))
        flipped = bool(torch.rand(1) < flip.p)
        after = torch.rand(1).item()  # the draws consumed the same part of the stream
        for draw in (None, buffer):
            generator = torch.Generator().manual_seed(seed)
            got = sample_train_box(generator, *shape, scale, hflip=True, buffer=draw)
            assert got == CropBox(top, left, h, w, flipped)
            assert torch.rand(1, generator=generator).item() == after


def _torchvision_view(image: torch.Tensor, box: CropBox, size: int, mode: str) -> torch.Tensor:
    """torchvision's per-image tensor transform: ToTensor, resized_crop (antialiased), hflip."""
    view = TF.resized_crop(image.float() / 255, box.top, box.left, box.height, box.width, [size, size], MODES[mode])
    return TF.hflip(view) if box.flip else view


@pytest.mark.parametrize("mode", list(MODES))
def test_batched_resized_crops_equal_torchvision_per_image(mode):
    images = torch.stack([random_image(40, 57, seed) for seed in range(6)])
    generator = torch.Generator().manual_seed(1)
    boxes = [sample_train_box(generator, 40, 57, (0.08, 1.0), hflip=True) for _ in range(6)]
    assert any(b.flip for b in boxes) and not all(b.flip for b in boxes)
    rows, columns = train_matrices(boxes, 40, 57, 24, mode)
    got = resample(images, rows, columns)
    want = torch.stack([_torchvision_view(img, box, 24, mode) for img, box in zip(images, boxes, strict=True)])
    # Sums of at most ~2 x 8 products of weights <= 1 and pixels <= 1 in float32: ~1e-6 absolute.
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_batched_test_views_equal_torchvision_resize_and_center_crop(shape):
    image = random_image(*shape, seed=2)
    rows, columns = eval_matrices(*shape, 24, "bicubic")
    got = resample(image[None], rows, columns)[0]
    want = TF.center_crop(TF.resize(image.float() / 255, 24, InterpolationMode.BICUBIC), 24)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_resize_weights_are_torch_antialiased_kernel_rows():
    x = torch.rand(1, 1, 20, 30, dtype=torch.float64)
    for mode in ("bicubic", "bilinear"):
        want = torch.nn.functional.interpolate(x, size=(12, 45), mode=mode, antialias=True, align_corners=False)
        got = resize_matrix(20, 12, mode) @ x[0, 0] @ resize_matrix(30, 45, mode).t()
        torch.testing.assert_close(got, want[0, 0], rtol=0, atol=1e-12)
        assert torch.allclose(resize_matrix(20, 12, mode).sum(1), torch.ones(12, dtype=torch.float64))


def _items(tmp_path, shapes):
    items = []
    for index, shape in enumerate(shapes):
        path = tmp_path / f"{index}.png"
        Image.fromarray(random_image(*shape, seed=index).permute(1, 2, 0).numpy()).save(path)
        items.append(Item(str(path), index % 2, f"class {index % 2}"))
    return items


def test_image_views_equal_the_per_image_transform_with_the_same_item_seeds(tmp_path):
    config = ImageTransformConfig(image_size=16, train_scale=(0.2, 1.0))
    items = _items(tmp_path, [(20, 30), (30, 20), (20, 30), (25, 25)])
    views = ImageViews(items, config, train=True)
    got = views.batch([0, 1, 2, 3], view_seed=11)
    mean, std = torch.tensor(config.mean)[:, None, None], torch.tensor(config.std)[:, None, None]
    for index, item in enumerate(items):
        image = pil_to_uint8(Image.open(item.impath))
        box = sample_train_box(
            torch.Generator().manual_seed(item_view_seed(11, index)), *image.shape[1:], (0.2, 1.0), True
        )
        want = (_torchvision_view(image, box, 16, "bicubic") - mean) / std
        torch.testing.assert_close(got[index], want, rtol=0, atol=1e-5)
    # Today's PIL path crops and flips identically; only PIL's 8-bit rounding between its passes differs.
    per_image = build_train_transform(config)
    for index, item in enumerate(items):
        torch.manual_seed(item_view_seed(11, index))
        pil_view = per_image(Image.open(item.impath).convert("RGB"))
        assert ((pil_view - got[index]) * std).abs().mean() < 2 / 255


def test_image_views_replay_decode_once_and_leave_the_global_generator_alone(tmp_path):
    items = _items(tmp_path, [(20, 30)] * 5)
    calls = []

    def loader(path: str) -> Image.Image:
        calls.append(path)
        return Image.open(path).convert("RGB")

    views = ImageViews(items, ImageTransformConfig(image_size=16), train=True, loader=loader)
    state = torch.random.get_rng_state()
    whole = views.batch(range(5), view_seed=3)
    parts = torch.cat([views.batch([0, 1], view_seed=3), views.batch([2, 3, 4], view_seed=3)])
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-6)  # a view does not depend on its batch
    assert not torch.allclose(whole, views.batch(range(5), view_seed=4))
    views.batch(range(5), view_seed=5)
    assert sorted(calls) == sorted(item.impath for item in items)  # each image decoded once


def test_decoded_budget_keeps_what_fits_and_decodes_the_rest_on_use(tmp_path):
    items = _items(tmp_path, [(600, 600)] * 3)  # 1.03 MB each
    views = ImageViews(items, ImageTransformConfig(image_size=16), train=False, decoded_budget_mb=2)
    first = views.images([0, 1, 2])
    assert [kept is not None for kept in views._kept] == [True, False, False]
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(first[1:], views.images([1, 2]), strict=True))
    test_view = build_test_transform(ImageTransformConfig(image_size=16))
    for index, item in enumerate(items):
        image = Image.open(item.impath).convert("RGB")
        want = test_view(image)
        assert ((views.batch([index])[0] - want) * torch.tensor(0.27)).abs().mean() < 2 / 255
    assert np.isfinite(views.batch([0, 1, 2]).numpy()).all()
