"""Augmentation on batches of image tensors: CoOp's random resized crop + flip, and the test resize + center crop.

Resizing is linear and separable, so a resized crop of an image ``X`` (C, H, W) is ``Wy @ X @ Wx^T`` with one
(S, H) and one (S, W) weight matrix per image. The matrices are taken from torch's own antialiased interpolation
(PIL's bicubic/bilinear kernel, which torchvision also applies to tensors), so a batch of crops of any sizes is
two batched matrix products on whatever device the images are on, equal to torchvision's per-image transform of
a float image tensor up to float rounding. PIL images differ from it only by PIL's 8-bit rounding (and pass
order) between its two passes, typically a few 8-bit steps at sharp edges.

Crop parameters are drawn exactly as ``torchvision.transforms.RandomResizedCrop.get_params`` draws them, but from
an explicit ``torch.Generator``: seeded with the same seed, they are the same numbers torchvision draws from the
global generator.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import fail

# CoOp / torchvision's aspect-ratio range of RandomResizedCrop.
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# torchvision's tensor modes for its interpolation names (NEAREST is torch's legacy "nearest").
_INTERPOLATE_MODES = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


@dataclass(frozen=True)
class CropBox:
    """A crop ``rows top : top + height, columns left : left + width`` and whether it is mirrored afterwards."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False


@functools.lru_cache(maxsize=64)
def _log_ratio(ratio: tuple[float, float]) -> tuple[float, float]:
    """torchvision's ``torch.log(torch.tensor(ratio))`` (float32), once per ratio."""
    low, high = torch.log(torch.tensor(ratio)).tolist()
    return low, high


def sample_resized_crop(
    generator: torch.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = CROP_RATIO,
    buffer: Tensor | None = None,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` drawn like ``RandomResizedCrop.get_params`` (same calls, same order, same dtypes).

    ``buffer``: a float32 tensor of one element to draw into (saves an allocation per draw; same numbers).
    """
    area = height * width
    log_low, log_high = _log_ratio(tuple(ratio))
    draw = torch.empty(1) if buffer is None else buffer
    for _ in range(10):
        target_area = area * draw.uniform_(scale[0], scale[1], generator=generator).item()
        aspect = draw.uniform_(log_low, log_high, generator=generator).exp_().item()
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            # random_ on the float buffer = torch.randint's draw (the same `random() % range` of one 32-bit word;
            # exact in float32 below 2^24 pixels), without a new tensor per call.
            top = int(draw.random_(0, height - h + 1, generator=generator).item())
            left = int(draw.random_(0, width - w + 1, generator=generator).item())
            return top, left, h, w
    # Fallback: the central crop of the largest box within the ratio range (as torchvision).
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_train_box(
    generator: torch.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    hflip: bool,
    buffer: Tensor | None = None,
) -> CropBox:
    """One training view's crop and flip: RandomResizedCrop's draws, then RandomHorizontalFlip's (``rand < 0.5``)."""
    draw = torch.empty(1) if buffer is None else buffer
    top, left, h, w = sample_resized_crop(generator, height, width, scale, buffer=draw)
    flip = hflip and draw.uniform_(0.0, 1.0, generator=generator).item() < 0.5  # torch.rand(1)'s draw
    return CropBox(top, left, h, w, flip)


def eval_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's Resize(size) (short side) + CenterCrop(size) as ``(new_h, new_w, top, left)``.

    The image is resized to (new_h, new_w), then rows ``top : top + size`` and columns ``left : left + size`` are kept.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if new_h < size or new_w < size:  # cannot happen for the short-side resize; torchvision would pad
        fail("image size", f"at least {size} pixels on each side after resizing", (new_h, new_w))
    return new_h, new_w, round((new_h - size) / 2.0), round((new_w - size) / 2.0)


# The weight caches hold one matrix per crop length (toy: 2 x 64 at most; a 500-pixel image at 224: ~0.5 MB each).
@functools.lru_cache(maxsize=512)
def resize_matrix(in_size: int, out_size: int, interpolation: str) -> Tensor:
    """(out_size, in_size) float64 weights of torch's 1-D antialiased resize (torchvision's tensor kernel).

    Obtained by resizing the identity along its rows: resizing is linear, so ``resize(I) = W @ I = W``.
    """
    if interpolation not in _INTERPOLATE_MODES:
        fail("interpolation", f"one of {tuple(_INTERPOLATE_MODES)}", interpolation)
    mode = _INTERPOLATE_MODES[interpolation]
    eye = torch.eye(in_size, dtype=torch.float64)[None, None]  # (1, 1, in, in)
    kwargs = {"antialias": True, "align_corners": False} if mode in ("bicubic", "bilinear") else {}
    return F.interpolate(eye, size=(out_size, in_size), mode=mode, **kwargs)[0, 0].contiguous()  # (out, in)


@functools.lru_cache(maxsize=512)
def _crop_weights(length: int, out_size: int, interpolation: str, flip: bool) -> Tensor:
    """float32 `resize_matrix` of a crop of ``length`` pixels, its output order reversed when ``flip``."""
    weights = resize_matrix(length, out_size, interpolation).float()
    return weights.flip(0) if flip else weights


def _eval_matrix(in_size: int, resized: int, start: int, out_size: int, interpolation: str) -> Tensor:
    """(out_size, in_size): resize to ``resized``, then keep ``start : start + out_size``."""
    return resize_matrix(in_size, resized, interpolation)[start : start + out_size]


def train_matrices(
    boxes: list[CropBox], height: int, width: int, size: int, interpolation: str
) -> tuple[Tensor, Tensor]:
    """Per-image float32 row (N, S, H) and column (N, S, W) weights of resized crops: each keeps its crop's pixels
    and resizes them to ``size`` (a flip reverses the columns' output order)."""
    rows = torch.zeros(len(boxes), size, height)
    columns = torch.zeros(len(boxes), size, width)
    for index, box in enumerate(boxes):
        rows[index, :, box.top : box.top + box.height] = _crop_weights(box.height, size, interpolation, False)
        columns[index, :, box.left : box.left + box.width] = _crop_weights(box.width, size, interpolation, box.flip)
    return rows, columns


def eval_matrices(height: int, width: int, size: int, interpolation: str) -> tuple[Tensor, Tensor]:
    """Row (S, H) and column (S, W) weights of the deterministic test view."""
    new_h, new_w, top, left = eval_box(height, width, size)
    return (
        _eval_matrix(height, new_h, top, size, interpolation),
        _eval_matrix(width, new_w, left, size, interpolation),
    )


def resample(images: Tensor, rows: Tensor, columns: Tensor) -> Tensor:
    """``rows @ image @ columns^T`` per image and channel: uint8 (N, C, H, W) -> float32 (N, C, S, S) in [0, 1]-ish.

    ``rows``/``columns`` are (N, S, H)/(N, S, W), or (S, H)/(S, W) shared by the batch. Pixels are scaled by
    ``1 / 255`` first (``ToTensor``); bicubic overshoot is kept, as torchvision keeps it on float tensors.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        fail("images", "a uint8 tensor (N, C, H, W)", (images.dtype, tuple(images.shape)))
    x = images.float() / 255.0
    rows = rows.to(x.device, torch.float32)
    columns = columns.to(x.device, torch.float32)
    if rows.ndim == 3:
        rows, columns = rows.unsqueeze(1), columns.unsqueeze(1)  # (N, 1, S, H), (N, 1, S, W): broadcast over C
    return rows @ x @ columns.transpose(-1, -2)  # (N, C, S, S)


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``(x - mean) / std`` per channel of (N, C, H, W) images."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t
