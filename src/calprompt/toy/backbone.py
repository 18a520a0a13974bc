"""The shipped toy CLIP as a frozen backbone: ``load_clip("toy")``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from open_clip.tokenizer import SimpleTokenizer
from safetensors import safe_open
from torch import Tensor

from calprompt.clip.backbone import ClipBackbone, Preprocess
from calprompt.clip.loading import file_digest, wrap_open_clip_model
from calprompt.toy.model import (
    DEFAULT_CHECKPOINT,
    TOKEN_IDS_KEY,
    TOY_IMAGE_MEAN,
    TOY_IMAGE_SIZE,
    TOY_IMAGE_STD,
    load_toy_clip_model,
)

# 32 px scenes hold one main object: a crop down to 8 % of the area (the CLIP default) would often cut it away.
TOY_PREPROCESS = Preprocess(
    image_size=TOY_IMAGE_SIZE,
    mean=TOY_IMAGE_MEAN,
    std=TOY_IMAGE_STD,
    interpolation="bicubic",
    train_crop_scale=(0.5, 1.0),
)


class ToyVocabularyTokenizer:
    """The CLIP tokenizer, warning when a prompt uses tokens whose embeddings the toy checkpoint does not store.

    The shipped checkpoint keeps only the token-embedding rows of the toy world's words; any other word would
    silently get a zero embedding, so it is named in a warning instead.
    """

    def __init__(self, context_length: int, known_ids: Sequence[int]) -> None:
        self._inner = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self._known = frozenset(int(i) for i in known_ids) | {0}
        self._warned: set[int] = set()

    def encode(self, text: str) -> list[int]:
        return self._inner.encode(text)

    def covers(self, text: str) -> bool:
        """Whether every token of ``text`` has an embedding in the toy checkpoint."""
        return set(self._inner.encode(text)) <= self._known

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        ids = self._inner(texts, context_length=context_length)
        unknown = set(ids.unique().tolist()) - self._known - self._warned
        if unknown:
            self._warned |= unknown
            texts = [texts] if isinstance(texts, str) else texts
            words = sorted({w for t in texts for w in t.split() if set(self._inner.encode(w)) & unknown})
            warnings.warn(
                f"The toy CLIP has no embedding for {words} (not words of the toy world), so they read as zero "
                "vectors. Use toy-world words in prompts and templates (see calprompt.toy.vocab).",
                stacklevel=2,
            )
        return ids


def load_toy_backbone(
    pretrained: str | None = None, *, device: str | torch.device = "cpu", precision: str = "fp32"
) -> ClipBackbone:
    """The toy CLIP (the shipped checkpoint, or a checkpoint file written by ``calprompt toy pretrain``)."""
    path = DEFAULT_CHECKPOINT if pretrained is None else Path(pretrained).expanduser()
    model, _meta = load_toy_clip_model(path)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    model = model.to(device=device, dtype=dtype)
    with safe_open(str(path), framework="pt") as stored:
        known_ids = stored.get_tensor(TOKEN_IDS_KEY).tolist()
    return wrap_open_clip_model(
        model,
        name="toy",
        pretrained=str(path),
        preprocess=TOY_PREPROCESS,
        identity=f"toy|{file_digest(path)}",
        tokenizer=ToyVocabularyTokenizer(model.context_length, known_ids),
    )
