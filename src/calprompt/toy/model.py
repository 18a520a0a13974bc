"""The tiny open_clip CLIP of the toy world: its config, a random-init builder and a compact checkpoint format.

The checkpoint stores fp16 safetensors in which the token embedding keeps only the rows of `toy_token_ids()`
(the world uses ~80 of 49408 tokens), plus a JSON sidecar with the config and metadata (recipe, steps, measured
numbers). Loading rebuilds a normal full-size fp32 model whose unused embedding rows are zero.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from safetensors.torch import load_file, save_file

from calprompt.toy.vocab import CONTEXT_LENGTH, toy_token_ids

TOY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 4, "width": 64, "layers": 3, "head_width": 32},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# The toy model is trained from scratch, so any normalisation works; CLIP's own constants keep the toy backbone's
# preprocessing identical to the real backbones' (only the 32 px image size differs).
TOY_IMAGE_SIZE = 32
TOY_IMAGE_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
TOY_IMAGE_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_INIT_LOGIT_SCALE = math.log(50.0)  # real CLIP ends at 100; from 1/0.07 the toy model only reached ~24

ASSET_DIR = Path(__file__).parent / "assets"
DEFAULT_CHECKPOINT = ASSET_DIR / "toy_clip.safetensors"
_EMBEDDING = "token_embedding.weight"
TOKEN_IDS_KEY = "toy.token_ids"
FORMAT = "calprompt-toy-clip/1"


def build_toy_clip(
    init_logit_scale: float = DEFAULT_INIT_LOGIT_SCALE, config: Mapping[str, Any] | None = None
) -> open_clip.CLIP:
    """A randomly initialised `open_clip.CLIP` with the toy config (or `config`); logit scale given in log space."""
    cfg = copy.deepcopy(dict(TOY_CLIP_CONFIG if config is None else config))
    return open_clip.CLIP(**cfg, init_logit_scale=float(init_logit_scale))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (B, H, W, 3) -> normalised float tensor (B, 3, H, W), as the toy preprocessing does."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(TOY_IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TOY_IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def sidecar_path(path: str | Path) -> Path:
    """The JSON file that accompanies a checkpoint: same name, `.json` suffix."""
    return Path(path).with_suffix(".json")


def save_toy_checkpoint(
    model: torch.nn.Module,
    path: str | Path,
    meta: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model` as a compact fp16 checkpoint plus JSON sidecar; returns the safetensors path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.tensor(toy_token_ids(), dtype=torch.int64)
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if name == _EMBEDDING:
            value = value[ids]  # (n_used, width)
        tensors[name] = value.to(torch.float16).contiguous() if value.is_floating_point() else value.contiguous()
    tensors[TOKEN_IDS_KEY] = ids
    config = TOY_CLIP_CONFIG if config is None else config
    sidecar = {"format": FORMAT, "config": dict(config), "meta": dict(meta or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    sidecar_path(path).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return path


def load_toy_clip_model(path: str | Path | None = None) -> tuple[open_clip.CLIP, dict[str, Any]]:
    """Load a toy checkpoint (default: the shipped asset) as an fp32 `open_clip.CLIP` in eval mode, with its meta."""
    path = DEFAULT_CHECKPOINT if path is None else Path(path)
    json_path = sidecar_path(path)
    if not path.is_file() or not json_path.is_file():
        shipped = ""
        if path == DEFAULT_CHECKPOINT:
            shipped = (
                " This is the default path of the shipped toy model, which has not been produced yet: run "
                "`calprompt toy pretrain --out DIR` and copy DIR/toy_clip.safetensors and DIR/toy_clip.json there."
            )
        missing = path if not path.is_file() else json_path
        raise FileNotFoundError(f"Toy CLIP checkpoint file not found: {missing}.{shipped}")
    sidecar = json.loads(json_path.read_text())
    if sidecar.get("format") != FORMAT:
        found = sidecar.get("format")
        raise ValueError(f"Expected {json_path} to describe a {FORMAT!r} checkpoint, got format {found!r}.")
    model = build_toy_clip(config=sidecar["config"])
    tensors = load_file(str(path))
    ids = tensors.pop(TOKEN_IDS_KEY)
    compact = tensors.pop(_EMBEDDING)
    full = torch.zeros_like(model.token_embedding.weight)
    full[ids] = compact.float()
    tensors[_EMBEDDING] = full
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    return model.float().eval(), sidecar.get("meta", {})
