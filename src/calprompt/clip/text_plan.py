"""The text-pass planner: how prompted sequences go through CLIP's causal text tower, exactly and cheaply.

Only each prompt's end-of-text feature leaves the tower, and under the causal mask no later position reaches it:
that makes the levers below exact. They live in one place so that every method gets them through
`ClipBackbone.encode_text_embeddings`, which hands the planner its tower and its lever settings (`TextPlanner`):

- **Truncation and length groups.** The tower runs on a row's positions up to its end of text only: every row is
  truncated to the longest prompt's end of text, or each group of rows to its own longest, with the rows split into
  the length groups that minimise the positions computed (each extra group charged as more positions, since it
  reads every weight again: small towers keep one group).
- **Shared prefix.** When the first ``k`` positions of every prompt of a group are the same tensor ([SOS] + shared
  context, and the same deep prompts there), their hidden states are the same for the whole group: they are
  computed once per group (`SharedPrefix`), and each prompt's remaining positions attend to the group's keys and
  values (`calprompt.clip.kernels.block_after_prefix`).
- **Bounded memory.** When a gradient pass over many prompts would keep more activations than the backbone's
  budget, the prompts are encoded in chunks whose activations are recomputed during the backward pass (features of
  all prompts first, without a graph; then each chunk encoded again with a graph and back-propagated with its part
  of the gradient, `_RecomputedRows`), which gives the same gradients.

The blocks themselves run through `calprompt.clip.kernels`, the last one at the end-of-text positions only.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calprompt._validation import fail
from calprompt.clip.kernels import (
    block_after_prefix,
    block_at_end,
    plain_block,
    plain_block_forward,
    prefix_keys,
    replace_tokens,
)

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
class TextPlanner:
    """The text tower of ``model`` run with one call's lever settings (`ClipBackbone`'s attributes of those names).

    ``share_prefixes`` and ``length_buckets``: None = where the work they save outweighs their extra kernel launches
    (not for tiny towers), True = always, False = never; ``memory_budget_mb``: the activations a gradient pass may
    keep before its rows are recomputed in chunks.
    """

    model: nn.Module  # the text tower's module (`calprompt.clip.families.text_tower`)
    share_prefixes: bool | None
    length_buckets: bool | None
    memory_budget_mb: float

    @property
    def width(self) -> int:
        return int(self.model.token_embedding.embedding_dim)

    @property
    def layers(self) -> int:
        return len(self.model.transformer.resblocks)

    def encode_truncated(
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
            rows = _RowEncoder(self.model, eot, prompts, prompt_start, mask=self._causal_mask(length))
            return self._encode_rows(rows, x, length, normalize)
        prefix_inputs = self._prefix_states(x[:: shared.group_size, : shared.length], prompts, prompt_start)
        rows = _RowEncoder(
            self.model,
            eot,
            prompts,
            prompt_start,
            mask=self._causal_mask(length),
            prefix=shared,
            prefix_inputs=prefix_inputs,
        )
        return self._encode_rows(rows, x[:, shared.length :], length - shared.length, normalize)

    def length_groups(self, eot: Tensor, shared: SharedPrefix | None, floor: int) -> list[tuple[Tensor, int]] | None:
        """Rows grouped by prompt length, each group truncated to its own longest prompt: ``[(rows, length)]``, or
        None when one group is best.

        Truncation to the longest prompt is exact for every row (causal mask), so it is for each group's longest;
        the groups are the partition of the sorted lengths that minimises the positions computed, each group charged
        `_GROUP_ROW_POSITIONS` more (``length_buckets=True``: nothing), so tiny towers keep one group. A shared prefix
        must span all rows (CoCoOp's per-image groups keep one group); no group is shorter than ``floor``.
        """
        rows = eot.shape[0]
        if self.model.attn_mask is None:
            return None  # bidirectional: a row's feature reads every position, so it is never truncated
        if self.length_buckets is False or rows < 2 or (shared is not None and shared.group_size not in (1, rows)):
            return None
        lengths = [max(int(e) + 1, floor) for e in eot.tolist()]
        values = sorted(set(lengths))
        if len(values) == 1:
            return None
        tally = collections.Counter(lengths)
        rows_below = list(itertools.accumulate((tally[v] for v in values), initial=0))  # rows shorter than values[j]
        skipped = shared.length if shared is not None and shared.group_size == rows else 0  # computed once anyway
        unit = 12 * self.width**2 * self.layers  # multiply-adds of one row position through the tower
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

    def encode_groups(
        self,
        groups: list[tuple[Tensor, int]],
        embeddings: Tensor,
        eot: Tensor,
        prompts: list[Tensor | None],
        prompt_start: int,
        normalize: bool,
        shared: SharedPrefix | None,
    ) -> Tensor:
        """Each length group through `encode_truncated`, the features put back in row order."""
        parts = []
        for index, length in groups:
            group_prompts = [p[index] if p is not None and p.ndim == 3 else p for p in prompts]
            group_shared = shared
            if shared is not None and shared.group_size > 1:  # spans all rows (`length_groups`): now the group's
                group_shared = SharedPrefix(shared.length, len(index))
            parts.append(
                self.encode_truncated(
                    embeddings[index], eot[index], length, group_prompts, prompt_start, normalize, group_shared
                )
            )
        order = torch.cat([index for index, _ in groups])
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
        if not all(plain_block(block) for block in self.model.transformer.resblocks):
            return None  # another block type: its attention cannot be split safely
        length = min(shared.length, first_eot)  # the end-of-text feature is always computed per row
        for prompt in prompts:
            if prompt is not None and prompt.ndim == 3:  # per-row deep prompts: the prefix ends before them
                length = min(length, prompt_start)
        if length < 1 or shared.group_size == 1:
            return None
        saved = (rows - rows // shared.group_size) * length * self.width**2 * self.layers
        if self.share_prefixes is None and saved < _MIN_SAVED_MACS:
            return None
        return SharedPrefix(length, shared.group_size)

    def _prefix_states(self, prefix: Tensor, prompts: list[Tensor | None], prompt_start: int) -> list[Tensor]:
        """Hidden states (G, k, D) of the shared prefix at the input of every layer (after that layer's deep prompt)."""
        mask = self._causal_mask(prefix.shape[1])
        inputs = []
        for block, prompt in zip(self.model.transformer.resblocks, prompts, strict=True):
            if prompt is not None and prompt_start < prefix.shape[1]:
                prefix = replace_tokens(prefix, prompt[..., : prefix.shape[1] - prompt_start, :], prompt_start)
            inputs.append(prefix)
            prefix = block(prefix, attn_mask=mask)
        return inputs

    def _encode_rows(self, rows: _RowEncoder, x: Tensor, length: int, normalize: bool) -> Tensor:
        """``rows(x)``, as `_RecomputedRows` chunks when a gradient pass would keep more than the memory budget."""
        count = x.shape[0]
        tensors = rows.tensors()
        if torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in tensors)):
            per_row = _activation_bytes_per_row(length, self.width, self.layers, x.element_size())
            budget_rows = self.memory_budget_mb * 2**20 / per_row
            if budget_rows < count:
                features = _RecomputedRows.apply(rows, max(1, int(budget_rows)), x, *tensors)
                return F.normalize(features, dim=-1) if normalize else features
        features = rows(x, 0)
        return F.normalize(features, dim=-1) if normalize else features


def _activation_bytes_per_row(length: int, width: int, layers: int, itemsize: int) -> int:
    """What backward keeps per prompt: per layer and position ~24 widths (norms, q/k/v, attention output, residuals,
    the 4x MLP before and after its activation) plus attention weights."""
    return length * layers * (24 * width + 2 * length) * itemsize


class _RowEncoder:
    """The text tower applied to a slice of rows ``start : start + n`` (one chunk), optionally after a shared prefix."""

    def __init__(
        self,
        model: nn.Module,
        eot: Tensor,
        prompts: list[Tensor | None],
        prompt_start: int,
        *,
        mask: Tensor | None,
        prefix: SharedPrefix | None = None,
        prefix_inputs: list[Tensor] | None = None,
    ) -> None:
        self.model, self.eot, self.prompts, self.prompt_start = model, eot, prompts, prompt_start
        self.mask, self.prefix, self.prefix_inputs = mask, prefix, prefix_inputs
        self.plain = [plain_block(block) for block in model.transformer.resblocks]

    def tensors(self) -> list[Tensor]:
        """The tensors besides the rows that the encoding reads and gradients may reach (deep prompts, prefix)."""
        return [p for p in self.prompts if p is not None] + list(self.prefix_inputs or [])

    def with_tensors(self, tensors: Sequence[Tensor]) -> _RowEncoder:
        """A copy reading ``tensors`` (in the order of :meth:`tensors`) instead of its own."""
        tensors = list(tensors)
        prompts = [None if p is None else tensors.pop(0) for p in self.prompts]
        prefix_inputs = tensors if self.prefix_inputs is not None else None
        return _RowEncoder(
            self.model,
            self.eot,
            prompts,
            self.prompt_start,
            mask=self.mask,
            prefix=self.prefix,
            prefix_inputs=prefix_inputs,
        )

    def __call__(self, x: Tensor, start: int) -> Tensor:
        model = self.model
        rows = slice(start, start + x.shape[0])
        offset = self.prefix.length if self.prefix is not None else 0
        for index, block in enumerate(model.transformer.resblocks):
            prompt = self.prompts[index]
            if prompt is not None:
                prompt = prompt[rows] if prompt.ndim == 3 else prompt
                begin = max(self.prompt_start, offset)  # the part of the prompt at or after the first row position
                if begin < self.prompt_start + prompt.shape[-2]:
                    x = replace_tokens(x, prompt[..., begin - self.prompt_start :, :], begin - offset)
            prefix = None
            if self.prefix is not None:
                prefix = prefix_keys(block, self.prefix_inputs[index], self.prefix.group_size, start, x.shape[0])
            if index == len(self.plain) - 1 and self.plain[index]:  # only the end-of-text rows are read from here
                pooled = model.ln_final(block_at_end(block, x, self.eot[rows] - offset, prefix, self.mask))
                break
            if prefix is not None:
                x = block_after_prefix(block, x, prefix, self.mask)
            else:
                x = plain_block_forward(block, x, self.mask) if self.plain[index] else block(x, attn_mask=self.mask)
        else:
            x = model.ln_final(x)
            pooled = x[torch.arange(x.shape[0], device=x.device), self.eot[rows] - offset]  # (n, D)
        projection = model.text_projection
        if projection is None:
            return pooled
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
