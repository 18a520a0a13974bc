"""A frozen CLIP backbone with hooks for prompt learners.

Prompt learners never fork the model: they hand their own token embeddings, deep prompts or visual prompt tokens to
:class:`ClipBackbone`, which runs open_clip's own sub-modules around them. Without prompts both encoders reproduce
open_clip's ``encode_text`` / ``encode_image`` exactly.

Four exact levers of the prompted text encoder live here, so that every method gets them:

- **Shared prefix.** When the first ``k`` positions of every prompt of a group are the same tensor ([SOS] + shared
  context, and the same deep prompts there), the causal encoder's hidden states at those positions are the same
  for the whole group: they are computed once per group (`SharedPrefix`), and each prompt's remaining positions
  attend to the group's keys and values (open_clip's block weights, its attention with the prefix K/V prepended).
- **Bounded memory.** When a gradient pass over many prompts would keep more activations than
  ``text_memory_budget_mb``, the prompts are encoded in chunks whose activations are recomputed during the backward
  pass (features of all prompts first, without a graph; then each chunk re-encoded with a graph and
  back-propagated with its part of the gradient), which gives the same gradients.
- **The last block at the end of text only.** Only the end-of-text feature leaves the tower, so the last block
  computes keys and values for every position but queries, attention output and MLP for the end-of-text position of
  each prompt (`_block_at_end`): about a third of the arithmetic of a 2-layer tower, 6 % of ViT-B/16's 12 layers.
- **Length groups.** Truncating every prompt to the longest one's end-of-text is exact; so is truncating each group of
  prompts to its own longest. When class names differ in length (1-4 words: 200 ViT-B/16 prompts of 9 to 15
  positions), the prompts are split into the length groups that minimise the positions computed, each extra group
  charged as 64 more positions (`_length_buckets`): 1.6x on that text pass; tiny towers keep one group.

The image tower gets the third of these too: a CLIP ViT's feature is its class token's, so its last block computes
queries, attention output and MLP at the class token only (keys and values for every patch and visual prompt); the
frozen encoder that fills the feature cache is the biggest single cost of a toy run (3 layers: -29 % there).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

from calprompt._validation import fail
from calprompt.conventions import CLIP_MEAN, CLIP_STD, DEFAULT_TEXT_MEMORY_MB

# A deep prompt per transformer layer: entry j (or None) replaces prompt tokens at the *input* of layer j.
DeepPrompts = Sequence[Tensor | None]
_SHARED_PREFIX_MARK = "_calprompt_shared_prefix"
# The automatic shared prefix pays off once it saves ~2^27 multiply-adds (row positions x width^2 x layers).
_MIN_SAVED_MACS = 2**27
# An extra length group costs about as much as this many more row positions (it reads every weight again, and its
# smaller matrix products run less efficiently on CPUs).
_GROUP_ROW_POSITIONS = 64


@dataclass(frozen=True)
class SharedPrefix:
    """Positions ``0 .. length - 1`` are the same in every row of each block of ``group_size`` consecutive rows.

    "The same" means the same function of the same tensors (e.g. one context expanded over the classes), not
    merely equal values: the prefix is computed from the first row of each group, so gradients reach the
    parameters through that row only.
    """

    length: int
    group_size: int


def mark_shared_prefix(embeddings: Tensor, prefix: SharedPrefix) -> Tensor:
    """Record on ``embeddings`` (..., L, D) that its rows share a prefix (read by ``encode_text_embeddings``).

    Rows are the sequences in order (a (B, C, L, D) tensor has B * C rows). The mark travels with this tensor and
    with views that flatten it to rows; any new tensor made from it (an addition, a cast to another dtype, a slice)
    is unmarked and takes the general path. An in-place change after marking voids the mark.
    """
    rows = embeddings.numel() // max(embeddings.shape[-2] * embeddings.shape[-1], 1)
    if embeddings.ndim < 3 or prefix.length < 1 or prefix.group_size < 1 or rows % prefix.group_size:
        fail("shared prefix", f"length >= 1 and a group size dividing the {rows} rows", prefix)
    setattr(embeddings, _SHARED_PREFIX_MARK, (prefix, embeddings._version))
    return embeddings


def marked_shared_prefix(embeddings: Tensor) -> SharedPrefix | None:
    """The valid `SharedPrefix` recorded on ``embeddings`` or on the tensor it is a whole-tensor reshape of."""
    marked = embeddings
    if getattr(embeddings, _SHARED_PREFIX_MARK, None) is None and embeddings._base is not None:
        base = embeddings._base
        same_rows = (
            base.is_contiguous()
            and embeddings.is_contiguous()
            and base.data_ptr() == embeddings.data_ptr()
            and base.numel() == embeddings.numel()
            and base.shape[-2:] == embeddings.shape[-2:]
        )
        marked = base if same_rows else embeddings
    mark = getattr(marked, _SHARED_PREFIX_MARK, None)
    if mark is None or mark[1] != marked._version:
        return None
    return mark[0]


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
        # The text-encoder levers of the module docstring. share_prefixes and length_buckets: None = where the work
        # they save outweighs their extra kernel launches (not for tiny towers), True = always, False = never.
        self.share_prefixes: bool | None = None
        self.length_buckets: bool | None = None
        self.text_memory_budget_mb: float = DEFAULT_TEXT_MEMORY_MB  # see the module docstring
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
        shared_prefix: SharedPrefix | None = None,
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
            shared_prefix: rows share their first positions (see `SharedPrefix`); by default the mark that
                `mark_shared_prefix` left on ``embeddings`` (`calprompt.methods.text_prompts` sets it).
        """
        if embeddings.ndim != 3 or token_ids.shape != embeddings.shape[:2]:
            fail(
                "embeddings/token_ids", "shapes (N, L, D) and (N, L)", (tuple(embeddings.shape), tuple(token_ids.shape))
            )
        eot = self.eot_positions(token_ids)
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
        if truncate:
            floor = prompt_start + widest if widest else 1  # deep prompts must fit inside every group
            buckets = self._length_buckets(eot, shared, floor)
            if buckets is not None:
                return self._encode_buckets(buckets, embeddings, eot, prompts, prompt_start, normalize, shared)
        return self._encode_truncated(embeddings, eot, length, prompts, prompt_start, normalize, shared)

    def _encode_truncated(
        self,
        embeddings: Tensor,
        eot: Tensor,
        length: int,
        prompts: list[Tensor | None],
        prompt_start: int,
        normalize: bool,
        shared: SharedPrefix | None,
    ) -> Tensor:
        """The text tower on the first ``length`` positions of every row (with the shared prefix where it pays)."""
        shared = self._usable_prefix(shared, embeddings.shape[0], int(eot.min()), prompts, prompt_start)
        x = embeddings[:, :length] + self.model.positional_embedding[:length].to(embeddings.dtype)
        if shared is None:
            rows = _RowEncoder(self, eot, prompts, prompt_start, mask=self._causal_mask(length))
            return self._encode_rows(rows, x, length, normalize)
        prefix_inputs = self._prefix_states(x[:: shared.group_size, : shared.length], prompts, prompt_start)
        rows = _RowEncoder(
            self, eot, prompts, prompt_start, mask=self._causal_mask(length), prefix=shared, prefix_inputs=prefix_inputs
        )
        return self._encode_rows(rows, x[:, shared.length :], length - shared.length, normalize)

    def _length_buckets(self, eot: Tensor, shared: SharedPrefix | None, floor: int) -> list[tuple[Tensor, int]] | None:
        """Rows grouped by prompt length, each group truncated to its own longest prompt: ``[(rows, length)]``, or
        None when one group is best.

        Truncation to the longest prompt is exact for every row (causal mask), so it is for each group's longest;
        the groups are the partition of the sorted lengths that minimises the positions computed, each group charged
        `_GROUP_ROW_POSITIONS` more (``length_buckets=True``: nothing), so tiny towers keep one group. A shared prefix
        must span all rows (CoCoOp's per-image groups keep one group); no group is shorter than ``floor``.
        """
        rows = eot.shape[0]
        if self.length_buckets is False or rows < 2 or (shared is not None and shared.group_size not in (1, rows)):
            return None
        lengths = [max(int(e) + 1, floor) for e in eot.tolist()]
        values = sorted(set(lengths))
        if len(values) == 1:
            return None
        tally = collections.Counter(lengths)
        rows_below = list(itertools.accumulate((tally[v] for v in values), initial=0))  # rows shorter than values[j]
        skipped = shared.length if shared is not None and shared.group_size == rows else 0  # computed once anyway
        unit = 12 * self.text_width**2 * self.text_layers  # multiply-adds of one row position through the tower
        charge = 0 if self.length_buckets else _GROUP_ROW_POSITIONS * unit
        # best[j]: least cost of the lengths values[:j]; cut[j]: where its last group starts.
        best, cut = [0] + [None] * len(values), [0] * (len(values) + 1)
        for end in range(1, len(values) + 1):
            for start in range(end):
                group_rows = rows_below[end] - rows_below[start]
                cost = best[start] + group_rows * max(values[end - 1] - skipped, 1) * unit + charge
                if best[end] is None or cost < best[end]:
                    best[end], cut[end] = cost, start
        groups, end = [], len(values)
        while end:
            groups.append((values[cut[end]], values[end - 1]))
            end = cut[end]
        if len(groups) == 1:
            return None
        length_of = torch.tensor(lengths, device=eot.device)
        return [
            (torch.nonzero((length_of >= low) & (length_of <= high)).squeeze(1), high) for low, high in reversed(groups)
        ]

    def _encode_buckets(
        self,
        buckets: list[tuple[Tensor, int]],
        embeddings: Tensor,
        eot: Tensor,
        prompts: list[Tensor | None],
        prompt_start: int,
        normalize: bool,
        shared: SharedPrefix | None,
    ) -> Tensor:
        """Each length group through `_encode_truncated`, the features put back in row order."""
        parts = []
        for index, length in buckets:
            group_prompts = [p[index] if p is not None and p.ndim == 3 else p for p in prompts]
            group_shared = shared
            if shared is not None and shared.group_size > 1:  # spans all rows (`_length_buckets`): now the group's
                group_shared = SharedPrefix(shared.length, len(index))
            parts.append(
                self._encode_truncated(
                    embeddings[index], eot[index], length, group_prompts, prompt_start, normalize, group_shared
                )
            )
        order = torch.cat([index for index, _ in buckets])
        return torch.cat(parts)[torch.argsort(order)]

    def _causal_mask(self, length: int) -> Tensor | None:
        mask = self.model.attn_mask
        return mask[:length, :length] if mask is not None else None

    def _usable_prefix(
        self, shared: SharedPrefix | None, rows: int, first_eot: int, prompts: list[Tensor | None], prompt_start: int
    ) -> SharedPrefix | None:
        """``shared`` shortened to what is exactly shared here, or None where the prefix path does not apply."""
        if self.share_prefixes is False or shared is None or rows % shared.group_size or self.model.attn_mask is None:
            return None
        if not all(_plain_block(block) for block in self.model.transformer.resblocks):
            return None  # another block type: its attention cannot be split safely
        length = min(shared.length, first_eot)  # the end-of-text feature is always computed per row
        for prompt in prompts:
            if prompt is not None and prompt.ndim == 3:  # per-row deep prompts: the prefix ends before them
                length = min(length, prompt_start)
        if length < 1 or shared.group_size == 1:
            return None
        saved = (rows - rows // shared.group_size) * length * self.text_width**2 * self.text_layers
        if self.share_prefixes is None and saved < _MIN_SAVED_MACS:
            return None
        return SharedPrefix(length, shared.group_size)

    def _prefix_states(self, prefix: Tensor, prompts: list[Tensor | None], prompt_start: int) -> list[Tensor]:
        """Hidden states (G, k, D) of the shared prefix at the input of every layer (after that layer's deep prompt)."""
        mask = self._causal_mask(prefix.shape[1])
        inputs = []
        for block, prompt in zip(self.model.transformer.resblocks, prompts, strict=True):
            if prompt is not None and prompt_start < prefix.shape[1]:
                prefix = _replace_tokens(prefix, prompt[..., : prefix.shape[1] - prompt_start, :], prompt_start)
            inputs.append(prefix)
            prefix = block(prefix, attn_mask=mask)
        return inputs

    def _encode_rows(self, rows: _RowEncoder, x: Tensor, length: int, normalize: bool) -> Tensor:
        """``rows(x)``, as `_RecomputedRows` chunks when a gradient pass would keep more than the memory budget."""
        count = x.shape[0]
        tensors = rows.tensors()
        if torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in tensors)):
            per_row = _activation_bytes_per_row(length, self.text_width, self.text_layers, x.element_size())
            budget_rows = self.text_memory_budget_mb * 2**20 / per_row
            if budget_rows < count:
                features = _RecomputedRows.apply(rows, max(1, int(budget_rows)), x, *tensors)
                return F.normalize(features, dim=-1) if normalize else features
        features = rows(x, 0)
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
        if prompts is None and deep_prompts is None and not isinstance(self.model.visual, VisionTransformer):
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
        blocks = visual.transformer.resblocks
        for index, block in enumerate(blocks):
            prompt = deep_prompts[index] if deep_prompts is not None and index < len(deep_prompts) else None
            if prompt is not None:
                if prompt.shape[-2] != x.shape[1] - n_tokens:
                    fail(f"deep_prompts[{index}]", f"{x.shape[1] - n_tokens} tokens like `prompts`", prompt.shape[-2])
                x = _replace_tokens(x, prompt, n_tokens)
            plain = _plain_block(block)
            if index == len(blocks) - 1 and plain and _pools_class_token(visual):  # only the class token is read
                pooled = visual.ln_post(_block_at_end(block, x, x.new_zeros(x.shape[0], dtype=torch.long), None, None))
                break
            x = _plain_block_forward(block, x, None) if plain else block(x)
        else:
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


def _plain_block(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's standard pre-norm block with a plain ``nn.MultiheadAttention``."""
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        return False
    attn = block.attn
    plain = attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and attn.bias_v is None
    return plain and attn.dropout == 0.0 and not attn.add_zero_attn


def _pools_class_token(visual: VisionTransformer) -> bool:
    """Whether the image feature is the class token's (position 0) output after ``ln_post``, as in CLIP's ViTs."""
    return visual.attn_pool is None and visual.pool_type == "tok"


def _activation_bytes_per_row(length: int, width: int, layers: int, itemsize: int) -> int:
    """What backward keeps per prompt: per layer and position ~24 widths (norms, q/k/v, attention output, residuals,
    the 4x MLP before and after its activation) plus attention weights."""
    return length * layers * (24 * width + 2 * length) * itemsize


class _RowEncoder:
    """The text tower applied to a slice of rows ``start : start + n`` (one chunk), optionally after a shared prefix."""

    def __init__(
        self,
        backbone: ClipBackbone,
        eot: Tensor,
        prompts: list[Tensor | None],
        prompt_start: int,
        *,
        mask: Tensor | None,
        prefix: SharedPrefix | None = None,
        prefix_inputs: list[Tensor] | None = None,
    ) -> None:
        self.backbone, self.eot, self.prompts, self.prompt_start = backbone, eot, prompts, prompt_start
        self.mask, self.prefix, self.prefix_inputs = mask, prefix, prefix_inputs
        self.plain = [_plain_block(block) for block in backbone.model.transformer.resblocks]

    def tensors(self) -> list[Tensor]:
        """The tensors besides the rows that the encoding reads and gradients may reach (deep prompts, prefix)."""
        return [p for p in self.prompts if p is not None] + list(self.prefix_inputs or [])

    def with_tensors(self, tensors: Sequence[Tensor]) -> _RowEncoder:
        """A copy reading ``tensors`` (in the order of :meth:`tensors`) instead of its own."""
        tensors = list(tensors)
        prompts = [None if p is None else tensors.pop(0) for p in self.prompts]
        prefix_inputs = tensors if self.prefix_inputs is not None else None
        return _RowEncoder(
            self.backbone,
            self.eot,
            prompts,
            self.prompt_start,
            mask=self.mask,
            prefix=self.prefix,
            prefix_inputs=prefix_inputs,
        )

    def __call__(self, x: Tensor, start: int) -> Tensor:
        model = self.backbone.model
        rows = slice(start, start + x.shape[0])
        offset = self.prefix.length if self.prefix is not None else 0
        for index, block in enumerate(model.transformer.resblocks):
            prompt = self.prompts[index]
            if prompt is not None:
                prompt = prompt[rows] if prompt.ndim == 3 else prompt
                begin = max(self.prompt_start, offset)  # the part of the prompt at or after the first row position
                if begin < self.prompt_start + prompt.shape[-2]:
                    x = _replace_tokens(x, prompt[..., begin - self.prompt_start :, :], begin - offset)
            prefix = None
            if self.prefix is not None:
                prefix = _prefix_keys(block, self.prefix_inputs[index], self.prefix.group_size, start, x.shape[0])
            if index == len(self.plain) - 1 and self.plain[index]:  # only the end-of-text rows are read from here
                pooled = model.ln_final(_block_at_end(block, x, self.eot[rows] - offset, prefix, self.mask))
                break
            if prefix is not None:
                x = _block_after_prefix(block, x, prefix, self.mask)
            else:
                x = _plain_block_forward(block, x, self.mask) if self.plain[index] else block(x, attn_mask=self.mask)
        else:
            x = model.ln_final(x)
            pooled = x[torch.arange(x.shape[0], device=x.device), self.eot[rows] - offset]  # (n, D)
        projection = model.text_projection
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection


class _RecomputedRows(torch.autograd.Function):
    """Text features of all rows computed without a graph; in backward, each chunk of rows is encoded again with a
    graph and back-propagated with its slice of the incoming gradient, so at most one chunk's activations live."""

    @staticmethod
    def forward(ctx, rows: _RowEncoder, chunk: int, x: Tensor, *tensors: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rows, ctx.chunk = rows, chunk
        ctx.autocast = (torch.is_autocast_enabled(x.device.type), torch.get_autocast_dtype(x.device.type))
        ctx.save_for_backward(x, *tensors)
        with torch.no_grad():
            return torch.cat([rows(x[start : start + chunk], start) for start in range(0, x.shape[0], chunk)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, *tensors = ctx.saved_tensors
        needs_x, needs = ctx.needs_input_grad[2], ctx.needs_input_grad[3:]
        grad_x = torch.zeros_like(x) if needs_x else None
        grads = [torch.zeros_like(t) if need else None for t, need in zip(tensors, needs, strict=True)]
        enabled, dtype = ctx.autocast
        for start in range(0, x.shape[0], ctx.chunk):
            with torch.enable_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
                rows = x[start : start + ctx.chunk].detach().requires_grad_(needs_x)
                inputs = [t.detach().requires_grad_(need) for t, need in zip(tensors, needs, strict=True)]
                features = ctx.rows.with_tensors(inputs)(rows, start)
                wanted = ([rows] if needs_x else []) + [t for t in inputs if t.requires_grad]
                parts = list(torch.autograd.grad(features, wanted, grad[start : start + ctx.chunk], allow_unused=True))
            if needs_x:
                part = parts.pop(0)
                if part is not None:
                    grad_x[start : start + ctx.chunk] = part
            for index, need in enumerate(needs):
                if need:
                    part = parts.pop(0)
                    if part is not None:
                        grads[index] += part
        return (None, None, grad_x, *grads)


def _prefix_keys(block: ResidualAttentionBlock, prefix: Tensor, group_size: int, start: int, n: int) -> Tensor:
    """The normalised shared-prefix states (n, k, D) that rows ``start : start + n`` attend to in ``block``;
    ``prefix`` (G, k, D) is the block's input at the prefix positions of each group of ``group_size`` rows."""
    normed = block.ln_1(prefix)  # (G, k, D)
    if normed.shape[0] == 1:
        return normed.expand(n, -1, -1)  # no copy
    return normed[torch.arange(start, start + n, device=prefix.device) // group_size]


def _block_after_prefix(block: ResidualAttentionBlock, x: Tensor, prefix: Tensor, mask: Tensor | None) -> Tensor:
    """One open_clip block on the positions after a shared prefix, attending to the prefix's keys and values.

    ``x`` (n, L - k, D) are the rows' positions after the prefix; ``prefix`` (n, k, D) their normalised prefix
    states (`_prefix_keys`). The block's own attention gets the suffix as queries and [prefix; suffix] as keys and
    values, so only the prefix's K/V projections are paid per row (not its queries, output projection and MLP).
    Equal to the block on the full rows, positions k.. .
    """
    suffix_length, k = x.shape[1], prefix.shape[1]
    normed = block.ln_1(x)
    keys = torch.cat([prefix, normed], dim=1)  # (n, L, D)
    rows_mask = mask[k : k + suffix_length, : k + suffix_length] if mask is not None else None
    x = x + block.ls_1(_attend(block.attn, normed, keys, rows_mask))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _block_at_end(
    block: ResidualAttentionBlock, x: Tensor, ends: Tensor, prefix: Tensor | None, mask: Tensor | None
) -> Tensor:
    """The last block's output (n, D) at one position per row, ``ends`` (n,) into ``x`` (n, L', D).

    Only the end-of-text feature leaves the text tower, and in a pre-norm block a position's output depends on
    the other positions through its attention's keys and values alone: the keys and values are computed for every
    position (after ``prefix``, the normalised shared-prefix states, when given), the query, attention output and
    MLP for the end positions only. Equal to the block's output at those positions; on a 2-layer tower this is
    about a third of the text arithmetic.
    """
    n = x.shape[0]
    rows = torch.arange(n, device=x.device)
    normed = block.ln_1(x)
    keys = normed if prefix is None else torch.cat([prefix, normed], dim=1)  # (n, S, D)
    ends_in_keys = ends + keys.shape[1] - x.shape[1]  # positions counted from the first key
    row_mask = None
    if mask is not None:
        row_mask = mask[ends_in_keys, : keys.shape[1]][:, None, None, :]  # (n, 1, 1, S): each row's causal row
    out = x[rows, ends] + block.ls_1(_attend_one(block.attn, normed[rows, ends], keys, row_mask))  # (n, D)
    return out + block.ls_2(block.mlp(block.ln_2(out)))


def _attend_one(attn: nn.MultiheadAttention, query: Tensor, keys: Tensor, mask: Tensor | None) -> Tensor:
    """`_attend` for one query per row, (n, D) against keys (n, S, D), written as batched products and an explicit
    softmax: CPU scaled-dot-product attention splits a single query's keys across threads, and CPU ``softmax``'s
    backward vectorises rows differently on one thread and on several, so their sums (and a resumed run's bits)
    would depend on the thread count; these operations do not."""
    n, width = query.shape
    q, k, v = _project_heads(attn, query.unsqueeze(1), keys)  # (n, heads, 1, d), (n, heads, S, d) x 2
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (n, heads, 1, S)
    if mask is not None:
        scores = scores + mask.to(scores.dtype)
    exp = (scores - scores.amax(dim=-1, keepdim=True).detach()).exp()  # the shift cancels: no gradient through it
    out = (exp / exp.sum(dim=-1, keepdim=True)) @ v  # (n, heads, 1, d)
    return attn.out_proj(out.reshape(n, width))


def _plain_block_forward(block: ResidualAttentionBlock, x: Tensor, mask: Tensor | None) -> Tensor:
    """``block(x, attn_mask=mask)`` for a `_plain_block`: the same operations in fewer dispatches (`_attend`)."""
    normed = block.ln_1(x)
    x = x + block.ls_1(_attend(block.attn, normed, normed, mask))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _attend(attn: nn.MultiheadAttention, queries: Tensor, keys: Tensor, mask: Tensor | None) -> Tensor:
    """``attn(queries, keys, keys, need_weights=False)[0]`` of a `_plain_block`'s attention with open_clip's mask.

    The packed in-projection, scaled-dot-product attention and out-projection that ``nn.MultiheadAttention`` runs,
    called directly: its argument checks and batch-first transposes cost more than the arithmetic on small text
    towers (the toy's training step is bound by such dispatches).
    """
    n, length, width = queries.shape
    q, k, v = _project_heads(attn, queries, keys)
    mask = mask.to(queries.dtype) if mask is not None else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (n, heads, length, width / heads)
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


def _project_heads(attn: nn.MultiheadAttention, queries: Tensor, keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The packed in-projection of ``attn``: queries (n, L, D) and keys (n, S, D) to per-head q (n, heads, L, d)
    and k, v (n, heads, S, d); one product when ``keys is queries`` (self-attention)."""
    n, length, width = queries.shape
    heads = attn.num_heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    if keys is queries:
        q, k, v = F.linear(queries, weight, bias).view(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v
    q = F.linear(queries, weight[:width], None if bias is None else bias[:width])
    kv = F.linear(keys, weight[width:], None if bias is None else bias[width:])
    k, v = kv.view(n, keys.shape[1], 2, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    return q.view(n, length, heads, -1).transpose(1, 2), k, v


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
