"""A frozen CLIP backbone with hooks for prompt learners: the one object methods and the engine encode through.

Prompt learners never fork the model: they hand their own token embeddings, deep prompts or visual prompt tokens to
:class:`ClipBackbone`, which keeps the weights `calprompt.clip.loading` loaded frozen and runs open_clip's own
sub-modules around the prompts. Without prompts both encoders reproduce open_clip's ``encode_text`` /
``encode_image`` exactly.

The facade checks its arguments and says what to encode. How a batch of prompts goes through the text tower
(truncation, length groups, a shared prefix computed once, chunks recomputed in backward under a memory budget) is
planned in `calprompt.clip.text_plan`, so that every method gets those exact levers; the block kernels both towers
run (the last block at the end-of-text position or at the class token only) are in `calprompt.clip.kernels`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from calprompt._validation import fail
from calprompt.clip import bert_text, timm_prompts
from calprompt.clip.families import FamilyLimitError, family_of, text_tower
from calprompt.clip.kernels import (
    block_at_end,
    expand_prompt,
    plain_block,
    plain_block_forward,
    pools_class_token,
    replace_tokens,
)
from calprompt.clip.text_plan import SharedPrefix, TextPlanner, marked_shared_prefix
from calprompt.clip.text_plan import mark_shared_prefix as mark_shared_prefix  # re-exported for prompt learners
from calprompt.clip.token_layout import text_start
from calprompt.conventions import CLIP_MEAN, CLIP_STD, DEFAULT_TEXT_MEMORY_MB

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
        self.family = family_of(model)  # refuses what the facade cannot host
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.preprocess = preprocess
        self._identity = identity or f"{name}|{pretrained}"
        # The text-pass levers (`calprompt.clip.text_plan`). share_prefixes and length_buckets: None = where the work
        # they save outweighs their extra kernel launches (not for tiny towers), True = always, False = never.
        self.share_prefixes: bool | None = None
        self.length_buckets: bool | None = None
        self.text_memory_budget_mb: float = DEFAULT_TEXT_MEMORY_MB  # see `text_plan`
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.eval()

    # ----------------------------------------------------------------------------------------------------------------
    # Module state
    @contextlib.contextmanager
    def text_memory_budget(self, megabytes: float) -> Iterator[None]:
        """``text_memory_budget_mb`` set to ``megabytes`` inside the block (a shared backbone gets its value back)."""
        previous, self.text_memory_budget_mb = self.text_memory_budget_mb, megabytes
        try:
            yield
        finally:
            self.text_memory_budget_mb = previous

    def train(self, mode: bool = True) -> ClipBackbone:
        """Keep the backbone in eval mode whatever the caller asks (it is frozen)."""
        return super().train(False)

    @property
    def identity(self) -> str:
        """A string naming the weights, used to key feature caches (a content hash where the loader set one)."""
        return self._identity

    @property
    def _bert(self) -> bool:
        return self.family.name == "bert-text"

    @property
    def text_tower(self) -> nn.Module:
        """The module holding the text tower's parts (`calprompt.clip.families.text_tower`)."""
        return text_tower(self.model)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the towers compute in (open_clip has no ``model.dtype``)."""
        if self._bert:
            return bert_text.word_embeddings(self.model.text).weight.dtype
        return self.text_tower.transformer.get_cast_dtype()

    @property
    def device(self) -> torch.device:
        if self._bert:
            return bert_text.word_embeddings(self.model.text).weight.device
        return self.text_tower.positional_embedding.device

    @property
    def logit_scale(self) -> Tensor:
        """``exp(logit_scale)``: the multiplier of cosine similarities (about 100 for OpenAI weights)."""
        return self.model.logit_scale.exp().float()

    @property
    def context_length(self) -> int:
        if self._bert:  # the tokenizer's (BiomedCLIP: 256), not the tower's position table
            return int(getattr(self.tokenizer, "context_length", self.model.context_length))
        return int(self.model.context_length)

    @property
    def text_width(self) -> int:
        if self._bert:
            return bert_text.text_width(self.model.text)
        return int(self.text_tower.token_embedding.embedding_dim)

    @property
    def vision_width(self) -> int:
        visual = self._prompt_host()
        return timm_prompts.width(visual) if self._timm_vision else int(visual.conv1.out_channels)

    @property
    def embed_dim(self) -> int:
        if self._bert:
            return int(self.model.text.output_dim)
        projection = self.text_tower.text_projection
        return int(projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1])

    @property
    def text_layers(self) -> int:
        if self._bert:
            reason = "prompts inside the layers of a Hugging Face text encoder are not placed"
            raise FamilyLimitError(self.family, "deep text prompts", reason)
        return len(self.text_tower.transformer.resblocks)

    @property
    def vision_layers(self) -> int:
        visual = self._prompt_host()
        return timm_prompts.layers(visual) if self._timm_vision else len(visual.transformer.resblocks)

    @property
    def _timm_vision(self) -> bool:
        return timm_prompts.timm_trunk(self.model.visual) is not None

    # ----------------------------------------------------------------------------------------------------------------
    # Text
    @functools.cached_property
    def text_start(self) -> int:
        """The position a text's first token takes (1 after CLIP's [SOS] or BERT's [CLS], 0 for SigLIP's tokenizers):
        where learnable context goes (`calprompt.clip.token_layout`)."""
        return text_start(self.tokenizer)

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        """Token ids (N, context_length) on the backbone's device, with the tokenizer's special tokens and padding."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts)).to(self.device)

    def embed_tokens(self, token_ids: Tensor) -> Tensor:
        """Token embeddings (N, L, D) in the compute dtype, without the positional embedding."""
        if self._bert:
            return bert_text.word_embeddings(self.model.text)(token_ids)
        return self.text_tower.token_embedding(token_ids).to(self.dtype)

    def eot_positions(self, token_ids: Tensor) -> Tensor:
        """The position each sequence's feature is read at (N,): its end-of-text token, or the last position of the
        context for towers pooled there (SigLIP)."""
        if self._bert:
            return bert_text.last_tokens(self.model.text, token_ids)
        if self.family.text_pool == "last":
            return torch.full(token_ids.shape[:1], self.context_length - 1, device=token_ids.device)
        if self.family.text_pool == "eos":
            return (token_ids == self.family.eos_id).int().argmax(dim=-1)
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
        prompt_start: int | None = None,
        normalize: bool = False,
        truncate: bool = True,
        shared_prefix: SharedPrefix | None = None,
    ) -> Tensor:
        """Project the end-of-text features of an embedding sequence through the text tower.

        Args:
            embeddings: (N, L, D) token embeddings (learnable context already spliced in), no positional embedding.
            token_ids: (N, L) ids, only used to locate the end-of-text token.
            deep_prompts: optional per-layer prompts; entry ``j`` of shape (P, D) or (N, P, D) replaces positions
                ``prompt_start : prompt_start + P`` at the input of text layer ``j`` (entry 0 is usually ``None``
                because layer 0 receives the prompts through ``embeddings``); by default where the text starts
                (`text_start`).
            truncate: run the causal transformer only on the first ``max_eot + 1`` positions. The attention mask is
                causal, so the end-of-text feature never depends on later positions: the result is exact.
            shared_prefix: rows share their first positions (see `SharedPrefix`); by default the mark that
                `mark_shared_prefix` left on ``embeddings`` (`calprompt.methods.text_prompts` sets it).
        """
        if embeddings.ndim != 3 or token_ids.shape != embeddings.shape[:2]:
            fail(
                "embeddings/token_ids", "shapes (N, L, D) and (N, L)", (tuple(embeddings.shape), tuple(token_ids.shape))
            )
        if self._bert:
            if deep_prompts is not None and any(p is not None for p in deep_prompts):
                self.text_layers  # noqa: B018 (raises the family's refusal)
            features = bert_text.encode(self.model.text, embeddings, token_ids, truncate)
            return F.normalize(features, dim=-1) if normalize else features
        prompt_start = self.text_start if prompt_start is None else prompt_start
        eot = self.eot_positions(token_ids)
        if int(eot.max()) >= embeddings.shape[1]:
            fail("token_ids", f"sequences reaching the pooled position {int(eot.max())}", tuple(token_ids.shape))
        truncate = truncate and self.family.causal_text  # a bidirectional tower's feature reads every position
        length = int(eot.max()) + 1 if truncate else embeddings.shape[1]
        self._check_deep_prompts(deep_prompts, self.text_layers, "deep_prompts")
        prompts = list(deep_prompts) if deep_prompts is not None else []
        widest = 0
        if prompts:
            widest = max((p.shape[-2] for p in prompts if p is not None), default=0)
            if prompt_start + widest > length:
                fail(
                    "deep_prompts",
                    f"to end before the end-of-text token (position {length - 1})",
                    f"prompts up to position {prompt_start + widest - 1}",
                )
        prompts += [None] * (self.text_layers - len(prompts))
        shared = shared_prefix if shared_prefix is not None else marked_shared_prefix(embeddings)
        planner = self.text_planner()
        if truncate:
            floor = prompt_start + widest if widest else 1  # deep prompts must fit inside every group
            groups = planner.length_groups(eot, shared, floor)
            if groups is not None:
                return planner.encode_groups(groups, embeddings, eot, prompts, prompt_start, normalize, shared)
        return planner.encode_truncated(embeddings, eot, length, prompts, prompt_start, normalize, shared)

    def text_planner(self) -> TextPlanner:
        """The text-pass planner of this backbone's tower with its current lever settings."""
        return TextPlanner(self.text_tower, self.share_prefixes, self.length_buckets, self.text_memory_budget_mb)

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
                before ``ln_pre`` (they get no positional embedding); in timm towers see `calprompt.clip.timm_prompts`.
            deep_prompts: entry ``j`` of shape (P, W) or (N, P, W) replaces the last P tokens at the input of vision
                layer ``j``; requires ``prompts`` of the same P (entry 0 is usually ``None``).
        """
        if prompts is None and deep_prompts is None and not isinstance(self.model.visual, VisionTransformer):
            return self.model.encode_image(images.to(self.dtype), normalize=normalize)
        visual = self._prompt_host()
        if deep_prompts is not None and prompts is None:
            fail("prompts", "given whenever deep_prompts are (deep prompts replace appended tokens)", None)
        self._check_deep_prompts(deep_prompts, self.vision_layers, "deep_prompts")
        if self._timm_vision:
            pooled = timm_prompts.encode_prompted(visual, images.to(self.dtype), prompts, deep_prompts)
            return F.normalize(pooled, dim=-1) if normalize else pooled

        x = visual.conv1(images.to(self.dtype))  # (N, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (N, g*g, W)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (N, 1 + g*g, W)
        x = visual.patch_dropout(x)
        n_tokens = x.shape[1]
        if prompts is not None:
            x = torch.cat([x, expand_prompt(prompts, x.shape[0]).to(x.dtype)], dim=1)  # (N, T + P, W)
        x = visual.ln_pre(x)
        blocks = visual.transformer.resblocks
        for index, block in enumerate(blocks):
            prompt = deep_prompts[index] if deep_prompts is not None and index < len(deep_prompts) else None
            if prompt is not None:
                if prompt.shape[-2] != x.shape[1] - n_tokens:
                    fail(f"deep_prompts[{index}]", f"{x.shape[1] - n_tokens} tokens like `prompts`", prompt.shape[-2])
                x = replace_tokens(x, prompt, n_tokens)
            plain = plain_block(block)
            if index == len(blocks) - 1 and plain and pools_class_token(visual):  # only the class token is read
                pooled = visual.ln_post(block_at_end(block, x, x.new_zeros(x.shape[0], dtype=torch.long), None, None))
                break
            x = plain_block_forward(block, x, None) if plain else block(x)
        else:
            pooled, _ = visual._pool(x[:, :n_tokens])  # prompt tokens never enter the pooled feature directly
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def _prompt_host(self) -> nn.Module:
        """The image tower, when visual prompt tokens can be placed in it (open_clip's ViT, timm ViT or EVA)."""
        visual = self.model.visual
        if isinstance(visual, VisionTransformer):
            return visual
        reason = timm_prompts.unhosted_reason(visual)
        if reason is None:
            return visual
        if timm_prompts.timm_trunk(visual) is None:
            reason = (
                f"its image tower is a {self.family.vision}, not a ViT (prompt tokens are placed inside open_clip "
                "ViT and timm ViT/EVA blocks only)"
            )
        raise FamilyLimitError(self.family, "visual prompt tokens", reason)

    @staticmethod
    def _check_deep_prompts(deep_prompts: DeepPrompts | None, layers: int, name: str) -> None:
        if deep_prompts is not None and len(deep_prompts) > layers:
            fail(name, f"at most {layers} entries (one per layer)", len(deep_prompts))
