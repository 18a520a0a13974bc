"""Block kernels: open_clip's pre-norm residual attention block, written out for the paths the backbone takes.

Each kernel reads only a block's own weights and equals the block (with open_clip's mask) on the positions it
returns; `plain_block` says which blocks they apply to, and any other block keeps open_clip's own forward.

- `plain_block_forward`: the block's operations called directly; ``nn.MultiheadAttention``'s argument checks and
  batch-first transposes cost more than the arithmetic on small towers.
- `block_after_prefix`: the block on the positions after a shared prefix, attending to the prefix's keys and
  values, so that a prefix shared by many rows is computed once (`calprompt.clip.text_plan`).
- `block_at_end`: the last block at one position per row (the end-of-text token, the class token). Only that
  position's feature leaves a tower, and in a pre-norm block the other positions reach it through keys and values
  alone. Its attention is written so that its bits do not depend on the thread count (a resumed run continues bit
  for bit).
- `expand_prompt` / `replace_tokens`: prompt tokens put into a sequence without in-place writes (autograd-safe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

from calprompt._validation import fail


def plain_block(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's standard pre-norm block with a plain ``nn.MultiheadAttention``."""
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        return False
    attn = block.attn
    plain = attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and attn.bias_v is None
    return plain and attn.dropout == 0.0 and not attn.add_zero_attn


def pools_class_token(visual: VisionTransformer) -> bool:
    """Whether the image feature is the class token's (position 0) output after ``ln_post``, as in CLIP's ViTs."""
    return visual.attn_pool is None and visual.pool_type == "tok"


def prefix_keys(block: ResidualAttentionBlock, prefix: Tensor, group_size: int, start: int, n: int) -> Tensor:
    """The normalised shared-prefix states (n, k, D) that rows ``start : start + n`` attend to in ``block``;
    ``prefix`` (G, k, D) is the block's input at the prefix positions of each group of ``group_size`` rows."""
    normed = block.ln_1(prefix)  # (G, k, D)
    if normed.shape[0] == 1:
        return normed.expand(n, -1, -1)  # no copy
    return normed[torch.arange(start, start + n, device=prefix.device) // group_size]


def block_after_prefix(block: ResidualAttentionBlock, x: Tensor, prefix: Tensor, mask: Tensor | None) -> Tensor:
    """One open_clip block on the positions after a shared prefix, attending to the prefix's keys and values.

    ``x`` (n, L - k, D) are the rows' positions after the prefix; ``prefix`` (n, k, D) their normalised prefix
    states (`prefix_keys`). The block's own attention gets the suffix as queries and [prefix; suffix] as keys and
    values, so only the prefix's K/V projections are paid per row (not its queries, output projection and MLP).
    Equal to the block on the full rows, positions k.. .
    """
    suffix_length, k = x.shape[1], prefix.shape[1]
    normed = block.ln_1(x)
    keys = torch.cat([prefix, normed], dim=1)  # (n, L, D)
    rows_mask = mask[k : k + suffix_length, : k + suffix_length] if mask is not None else None
    x = x + block.ls_1(_attend(block.attn, normed, keys, rows_mask))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def block_at_end(
    block: ResidualAttentionBlock, x: Tensor, ends: Tensor, prefix: Tensor | None, mask: Tensor | None
) -> Tensor:
    """The last block's output (n, D) at one position per row, ``ends`` (n,) into ``x`` (n, L', D).

    Only one position's feature leaves a tower (a prompt's end-of-text token, an image's class token), and in a
    pre-norm block a position's output depends on the other positions through its attention's keys and values
    alone: the keys and values are computed for every position (after ``prefix``, the normalised shared-prefix
    states, when given), the query, attention output and MLP for the end positions only. Equal to the block's output
    at those positions.
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


def plain_block_forward(block: ResidualAttentionBlock, x: Tensor, mask: Tensor | None) -> Tensor:
    """``block(x, attn_mask=mask)`` for a `plain_block`: the same operations in fewer dispatches (`_attend`)."""
    normed = block.ln_1(x)
    x = x + block.ls_1(_attend(block.attn, normed, normed, mask))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _attend(attn: nn.MultiheadAttention, queries: Tensor, keys: Tensor, mask: Tensor | None) -> Tensor:
    """``attn(queries, keys, keys, need_weights=False)[0]`` of a `plain_block`'s attention with open_clip's mask.

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


def expand_prompt(prompt: Tensor, batch: int) -> Tensor:
    """(P, D) -> (N, P, D); (N, P, D) is checked and passed through."""
    if prompt.ndim == 2:
        return prompt.unsqueeze(0).expand(batch, -1, -1)
    if prompt.ndim != 3 or prompt.shape[0] != batch:
        fail("prompt", f"of shape (P, D) or ({batch}, P, D)", tuple(prompt.shape))
    return prompt


def replace_tokens(x: Tensor, prompt: Tensor, start: int) -> Tensor:
    """Return ``x`` with positions ``start : start + P`` replaced by ``prompt`` (no in-place write: autograd-safe)."""
    prompt = expand_prompt(prompt, x.shape[0]).to(x.dtype)
    end = start + prompt.shape[1]
    return torch.cat([x[:, :start], prompt, x[:, end:]], dim=1)
