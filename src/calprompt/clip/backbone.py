"""A frozen CLIP backbone with hooks for prompt learners.

Prompt learners never fork the model: they hand their own token embeddings, deep prompts or visual prompt tokens to
:class:`ClipBackbone`, which runs open_clip's own sub-modules around them. Without prompts both encoders reproduce
open_clip's ``encode_text`` / ``encode_image`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from calprompt._validation import fail
from calprompt.conventions import CLIP_MEAN, CLIP_STD

# A deep prompt per transformer layer: entry j (or None) replaces prompt tokens at the *input* of layer j.
DeepPrompts = Sequence[Tensor | None]


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for this backbone (size, normalisation, resampling)."""

    image_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"
    # Scale range of RandomResizedCrop for training views; tiny images need a milder crop than (0.08, 1).
    train_crop_scale: tuple[float, float] = (0.08, 1.0)


class ClipBackbone(nn.Module):
    """A frozen open_clip CLIP model exposing the pieces prompt learners need.

    All parameters have ``requires_grad=False`` and the module stays in eval mode even when a parent calls ``train()``.
    Gradients still flow *through* the encoders to prompt tensors that require them.
    """

    def __init__(
        self,
        model: CLIP,
        tokenizer: Callable[..., Tensor],
        *,
        name: str,
        pretrained: str | None,
        preprocess: Preprocess,
        identity: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, CLIP):
            fail("model", "an open_clip.model.CLIP (CustomTextCLIP / CoCa text towers are not supported)", type(model))
        if model.text_pool_type not in ("argmax", "eos"):
            fail(
                "model.text_pool_type",
                "'argmax' or 'eos' (prompt learning pools the end-of-text token)",
                model.text_pool_type,
            )
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.preprocess = preprocess
        self._identity = identity or f"{name}|{pretrained}"
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.eval()

    # ----------------------------------------------------------------------------------------------------------------
    # Module state
    def train(self, mode: bool = True) -> ClipBackbone:
        """Keep the backbone in eval mode whatever the caller asks (it is frozen)."""
        return super().train(False)

    @property
    def identity(self) -> str:
        """A string naming the weights, used to key feature caches (a content hash where the loader set one)."""
        return self._identity

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the towers compute in (open_clip has no ``model.dtype``)."""
        return self.model.transformer.get_cast_dtype()

    @property
    def device(self) -> torch.device:
        return self.model.positional_embedding.device

    @property
    def logit_scale(self) -> Tensor:
        """``exp(logit_scale)``: the multiplier of cosine similarities (about 100 for OpenAI weights)."""
        return self.model.logit_scale.exp().float()

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.embedding_dim)

    @property
    def vision_width(self) -> int:
        visual = self._vision_transformer()
        return int(visual.conv1.out_channels)

    @property
    def embed_dim(self) -> int:
        projection = self.model.text_projection
        return int(projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1])

    @property
    def text_layers(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def vision_layers(self) -> int:
        return len(self._vision_transformer().transformer.resblocks)

    # ----------------------------------------------------------------------------------------------------------------
    # Text
    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        """Token ids (N, context_length) on the backbone's device; SOT/EOT added, zero padded."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts)).to(self.device)

    def embed_tokens(self, token_ids: Tensor) -> Tensor:
        """Token embeddings (N, L, D) in the compute dtype, without the positional embedding."""
        return self.model.token_embedding(token_ids).to(self.dtype)

    def eot_positions(self, token_ids: Tensor) -> Tensor:
        """Index of the end-of-text token of each sequence (N,)."""
        if self.model.text_pool_type == "eos":
            return (token_ids == self.model.text_eos_id).int().argmax(dim=-1)
        return token_ids.argmax(dim=-1)

    def encode_text(self, token_ids: Tensor, *, normalize: bool = False, truncate: bool = True) -> Tensor:
        """Frozen text features of token ids: the prompt-free path, equal to open_clip's ``encode_text``."""
        return self.encode_text_embeddings(
            self.embed_tokens(token_ids), token_ids, normalize=normalize, truncate=truncate
        )

    def encode_text_embeddings(
        self,
        embeddings: Tensor,
        token_ids: Tensor,
        *,
        deep_prompts: DeepPrompts | None = None,
        prompt_start: int = 1,
        normalize: bool = False,
        truncate: bool = True,
    ) -> Tensor:
        """Project the end-of-text features of an embedding sequence through the text tower.

        Args:
            embeddings: (N, L, D) token embeddings (learnable context already spliced in), no positional embedding.
            token_ids: (N, L) ids, only used to locate the end-of-text token.
            deep_prompts: optional per-layer prompts; entry ``j`` of shape (P, D) or (N, P, D) replaces positions
                ``prompt_start : prompt_start + P`` at the input of text layer ``j`` (entry 0 is usually ``None``
                because layer 0 receives the prompts through ``embeddings``).
            truncate: run the causal transformer only on the first ``max_eot + 1`` positions. The attention mask is
                causal, so the end-of-text feature never depends on later positions: the result is exact.
        """
        if embeddings.ndim != 3 or token_ids.shape != embeddings.shape[:2]:
            fail(
                "embeddings/token_ids", "shapes (N, L, D) and (N, L)", (tuple(embeddings.shape), tuple(token_ids.shape))
            )
        eot = self.eot_positions(token_ids)
        length = int(eot.max()) + 1 if truncate else embeddings.shape[1]
        self._check_deep_prompts(deep_prompts, self.text_layers, "deep_prompts")
        if deep_prompts is not None:
            widest = max((p.shape[-2] for p in deep_prompts if p is not None), default=0)
            if prompt_start + widest > length:
                fail(
                    "deep_prompts",
                    f"to end before the end-of-text token (position {length - 1})",
                    f"prompts up to position {prompt_start + widest - 1}",
                )

        x = embeddings[:, :length] + self.model.positional_embedding[:length].to(embeddings.dtype)
        mask = self.model.attn_mask
        mask = mask[:length, :length] if mask is not None else None
        for index, block in enumerate(self.model.transformer.resblocks):
            prompt = deep_prompts[index] if deep_prompts is not None and index < len(deep_prompts) else None
            if prompt is not None:
                x = _replace_tokens(x, prompt, prompt_start)
            x = block(x, attn_mask=mask)
        x = self.model.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]  # (N, D)
        projection = self.model.text_projection
        features = projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection
        return F.normalize(features, dim=-1) if normalize else features

    # ----------------------------------------------------------------------------------------------------------------
    # Images
    def encode_image(
        self,
        images: Tensor,
        *,
        prompts: Tensor | None = None,
        deep_prompts: DeepPrompts | None = None,
        normalize: bool = False,
    ) -> Tensor:
        """Image features, optionally with visual prompt tokens (VPT / MaPLe / IVLP semantics).

        Args:
            images: (N, 3, H, W) preprocessed images.
            prompts: (P, W) or (N, P, W) tokens appended after the patch tokens, after the positional embedding and
                before ``ln_pre`` (they get no positional embedding).
            deep_prompts: entry ``j`` of shape (P, W) or (N, P, W) replaces the last P tokens at the input of vision
                layer ``j``; requires ``prompts`` of the same P (entry 0 is usually ``None``).
        """
        if prompts is None and deep_prompts is None:
            visual = self.model.visual
            if not isinstance(visual, VisionTransformer):
                return self.model.encode_image(images.to(self.dtype), normalize=normalize)
        visual = self._vision_transformer()
        if deep_prompts is not None and prompts is None:
            fail("prompts", "given whenever deep_prompts are (deep prompts replace appended tokens)", None)
        self._check_deep_prompts(deep_prompts, self.vision_layers, "deep_prompts")

        x = visual.conv1(images.to(self.dtype))  # (N, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (N, g*g, W)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (N, 1 + g*g, W)
        x = visual.patch_dropout(x)
        n_tokens = x.shape[1]
        if prompts is not None:
            x = torch.cat([x, _expand_prompt(prompts, x.shape[0]).to(x.dtype)], dim=1)  # (N, T + P, W)
        x = visual.ln_pre(x)
        for index, block in enumerate(visual.transformer.resblocks):
            prompt = deep_prompts[index] if deep_prompts is not None and index < len(deep_prompts) else None
            if prompt is not None:
                if prompt.shape[-2] != x.shape[1] - n_tokens:
                    fail(f"deep_prompts[{index}]", f"{x.shape[1] - n_tokens} tokens like `prompts`", prompt.shape[-2])
                x = _replace_tokens(x, prompt, n_tokens)
            x = block(x)
        pooled, _ = visual._pool(x[:, :n_tokens])  # prompt tokens never enter the pooled feature directly
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def _vision_transformer(self) -> VisionTransformer:
        visual = self.model.visual
        if not isinstance(visual, VisionTransformer):
            fail("backbone vision tower", "a VisionTransformer for visual prompts", type(visual).__name__)
        return visual

    @staticmethod
    def _check_deep_prompts(deep_prompts: DeepPrompts | None, layers: int, name: str) -> None:
        if deep_prompts is not None and len(deep_prompts) > layers:
            fail(name, f"at most {layers} entries (one per layer)", len(deep_prompts))


def _expand_prompt(prompt: Tensor, batch: int) -> Tensor:
    """(P, D) -> (N, P, D); (N, P, D) is checked and passed through."""
    if prompt.ndim == 2:
        return prompt.unsqueeze(0).expand(batch, -1, -1)
    if prompt.ndim != 3 or prompt.shape[0] != batch:
        fail("prompt", f"of shape (P, D) or ({batch}, P, D)", tuple(prompt.shape))
    return prompt


def _replace_tokens(x: Tensor, prompt: Tensor, start: int) -> Tensor:
    """Return ``x`` with positions ``start : start + P`` replaced by ``prompt`` (no in-place write: autograd-safe)."""
    prompt = _expand_prompt(prompt, x.shape[0]).to(x.dtype)
    end = start + prompt.shape[1]
    return torch.cat([x[:, :start], prompt, x[:, end:]], dim=1)
