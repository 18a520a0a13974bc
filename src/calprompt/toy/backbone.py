"""The shipped toy CLIP as a frozen backbone: ``load_clip("toy")``."""

from __future__ import annotations

from pathlib import Path

import torch

from calprompt.clip.backbone import ClipBackbone, Preprocess
from calprompt.clip.loading import file_digest, wrap_open_clip_model
from calprompt.toy.model import DEFAULT_CHECKPOINT, TOY_IMAGE_MEAN, TOY_IMAGE_SIZE, TOY_IMAGE_STD, load_toy_clip_model

# 32 px scenes hold one main object: a crop down to 8 % of the area (the CLIP default) would often cut it away.
TOY_PREPROCESS = Preprocess(
    image_size=TOY_IMAGE_SIZE,
    mean=TOY_IMAGE_MEAN,
    std=TOY_IMAGE_STD,
    interpolation="bicubic",
    train_crop_scale=(0.5, 1.0),
)


def load_toy_backbone(
    pretrained: str | None = None, *, device: str | torch.device = "cpu", precision: str = "fp32"
) -> ClipBackbone:
    """The toy CLIP (the shipped checkpoint, or a checkpoint file written by ``calprompt toy pretrain``)."""
    path = DEFAULT_CHECKPOINT if pretrained is None else Path(pretrained).expanduser()
    model, _meta = load_toy_clip_model(path)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    model = model.to(device=device, dtype=dtype)
    return wrap_open_clip_model(
        model, name="toy", pretrained=str(path), preprocess=TOY_PREPROCESS, identity=f"toy|{file_digest(path)}"
    )
