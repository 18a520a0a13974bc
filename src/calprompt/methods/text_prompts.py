"""Learnable-context text prompts: ``[SOS] ctx_1..ctx_n {class} . [EOS]`` shared by every CoOp-style method.

The context goes where the tokenizer starts the text (`ClipBackbone.text_start`): after CLIP's [SOS] or BERT's
[CLS], first for SigLIP's tokenizers, which put nothing before the text (``ctx_1..ctx_n {class} </s> <pad>..``).
It is inserted into the ids of the class name's own tokenization, so the tokenizer's end token and padding stay
as it writes them, however it would have split a placeholder word.

Token ids and frozen token embeddings are built once per class list and kept only up to the longest prompt's
end-of-text token (exact context truncation), so each training step encodes ~max_eot + 1 positions instead of 77.
When the context is shared by the classes, [SOS] and the context (up to the class name) are the same in every
prompt: the assembled embeddings are marked with that shared prefix (`calprompt.clip.text_plan.SharedPrefix`), and
the backbone encodes it once per step (once per image for per-image context) instead of once per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from calprompt._validation import fail
from calprompt.clip.backbone import ClipBackbone
from calprompt.clip.text_plan import SharedPrefix, mark_shared_prefix, marked_shared_prefix
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.conventions import clean_classname

ClassTokenPosition = Literal["end", "middle", "front"]
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"


def context_from_phrase(backbone: ClipBackbone, phrase: str) -> Tensor:
    """Token embeddings (n, D) of an initialisation phrase such as "a photo of a" (without SOS/EOS)."""
    n_tokens = len(backbone.tokenizer.encode(phrase))
    if n_tokens == 0:
        fail("ctx_init", "a phrase with at least one token", phrase)
    ids = backbone.tokenize(phrase)
    start = backbone.text_start
    with torch.no_grad():
        return backbone.embed_tokens(ids)[0, start : start + n_tokens].float().clone()


def with_context_slots(backbone: ClipBackbone, texts: Sequence[str], n_ctx: int) -> Tensor:
    """Ids (N, L) of ``texts`` with ``n_ctx`` placeholder positions inserted where the text starts.

    The last ``n_ctx`` positions of each row are dropped: they are padding, since every text leaves room for its
    context (checked here) and the tokenizer's end token.
    """
    start = backbone.text_start
    for text in texts:
        if start + len(backbone.tokenizer.encode(text)) + n_ctx + 1 > backbone.context_length:
            fail(
                "class name",
                f"short enough for {n_ctx} context tokens in a {backbone.context_length}-token context",
                text,
            )
    ids = backbone.tokenize(texts)  # (N, L)
    placeholder = backbone.tokenize(PLACEHOLDER)[0, start]  # its id only marks the slot (not pad, not end)
    slots = placeholder.expand(ids.shape[0], n_ctx)
    return torch.cat([ids[:, :start], slots, ids[:, start : ids.shape[1] - n_ctx]], dim=1)  # (N, L)


def initial_context(
    backbone: ClipBackbone, n_ctx: int, phrase: str | None, init_std: float, *, pad: bool = False
) -> Tensor:
    """Initial context vectors (n_ctx, D): the phrase's token embeddings, or N(0, init_std) without a phrase.

    With ``pad`` a phrase shorter than ``n_ctx`` fills the *last* rows and the rows before it are N(0, init_std)
    (zeros for ``init_std=0``), as ProGrad initialises 16 vectors from a 4-token template phrase. Random rows come
    from the (run-seeded) global generator.
    """
    if phrase is None:
        return torch.randn(n_ctx, backbone.text_width) * init_std
    context = context_from_phrase(backbone, phrase)
    if context.shape[0] == n_ctx:
        return context
    if not pad or context.shape[0] > n_ctx:
        needed = f"{context.shape[0]}" + (" or more" if pad else "")
        fail("n_ctx", f"{needed} (the number of tokens of ctx_init {phrase!r})", n_ctx)
    head = torch.randn(n_ctx - context.shape[0], backbone.text_width) * init_std
    return torch.cat([head, context])


class ClassPromptTokens(nn.Module):
    """Frozen pieces of the prompts of one class list, and their assembly around learnable context vectors.

    Buffers (not saved with weights; rebuilt by :meth:`build`): ``token_ids`` (C, L), ``prefix`` (C, s, D) = what
    the tokenizer puts before the text (SOS; nothing for SigLIP's), ``suffix`` (C, L - s - n_ctx, D) = class tokens,
    ".", EOS and padding, and for non-"end" positions a gather index that moves the class tokens in front of / into
    the middle of the context.
    """

    def __init__(self, n_ctx: int, position: ClassTokenPosition = "end") -> None:
        super().__init__()
        if position not in CLASS_TOKEN_POSITIONS:
            fail("class_token_position", f"one of {CLASS_TOKEN_POSITIONS}", position)
        self.n_ctx = n_ctx
        self.position = position
        self.dtype = torch.float32
        self.start = 1  # where the text starts in the tokenizer's rows (set by `build`)

    @property
    def shared_length(self) -> int:
        """Positions identical in every class's prompt when the context is shared: [SOS] and the context before the
        class name (0 when nothing is: SigLIP's tokenizers with the class name first)."""
        return self.start + {"end": self.n_ctx, "middle": self.n_ctx // 2, "front": 0}[self.position]

    def build(self, backbone: ClipBackbone, classnames: Sequence[str]) -> None:
        """Tokenize ``"{class}."`` for each class, insert the context slots, keep the frozen embeddings."""
        names = [clean_classname(name) for name in classnames]
        self.start = backbone.text_start
        name_lengths = [len(backbone.tokenizer.encode(name)) for name in names]
        ids = with_context_slots(backbone, [f"{name}." for name in names], self.n_ctx)
        length = int(backbone.eot_positions(ids).max()) + 1  # exact truncation: nothing after EOS matters
        ids = ids[:, :length]
        with torch.no_grad():
            embeddings = backbone.embed_tokens(ids).float()
        self.dtype = backbone.dtype
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("prefix", embeddings[:, : self.start].clone(), persistent=False)
        self.register_buffer("suffix", embeddings[:, self.start + self.n_ctx :].clone(), persistent=False)
        self.register_buffer("order", self._order(name_lengths, length, ids.device), persistent=False)

    def _order(self, name_lengths: list[int], length: int, device: torch.device) -> Tensor | None:
        """Per-class gather index (C, L) from the "end" layout to the requested layout, or None for "end"."""
        if self.position == "end":
            return None
        n, start = self.n_ctx, self.start
        head = list(range(start))
        rows = []
        for name_length in name_lengths:
            ctx = list(range(start, start + n))
            name = list(range(start + n, start + n + name_length))
            rest = list(range(start + n + name_length, length))
            if self.position == "front":
                rows.append([*head, *name, *ctx, *rest])
            else:  # middle: half of the context, the class, the other half
                half = n // 2
                rows.append([*head, *ctx[:half], *name, *ctx[half:], *rest])
        return torch.tensor(rows, dtype=torch.long, device=device)

    def assemble(self, context: Tensor) -> Tensor:
        """Prompt embeddings (C, L, D), in the backbone's dtype, from shared context (n_ctx, D) or class-specific
        context (C, n_ctx, D); shared context marks the prompts' shared prefix for the backbone."""
        num_classes = self.prefix.shape[0]
        shared = context.ndim == 2
        if shared:
            context = context.unsqueeze(0).expand(num_classes, -1, -1)
        if context.ndim != 3 or context.shape[0] != num_classes:
            fail("context", f"of shape (n_ctx, D) or ({num_classes}, n_ctx, D)", tuple(context.shape))
        prompts = torch.cat([self.prefix, context.to(self.prefix.dtype), self.suffix], dim=1)  # (C, L, D)
        prompts = (prompts if self.order is None else _gather_positions(prompts, self.order)).to(self.dtype)
        return self._mark(prompts, num_classes) if shared else prompts

    def _mark(self, prompts: Tensor, group_size: int) -> Tensor:
        if self.shared_length == 0:
            return prompts
        return mark_shared_prefix(prompts, SharedPrefix(self.shared_length, group_size))

    def assemble_per_image(self, context: Tensor) -> Tensor:
        """Prompt embeddings (B, C, L, D) from per-image context (B, n_ctx, D) (image-conditioned prompts).

        Each image's C prompts share their prefix; the mark survives flattening to (B * C, L, D) rows.
        """
        if self.order is not None:
            fail("class_token_position", "'end' for per-image context", self.position)
        batch, num_classes = context.shape[0], self.prefix.shape[0]
        context = context.to(self.prefix.dtype).unsqueeze(1).expand(-1, num_classes, -1, -1)  # (B, C, n_ctx, D)
        prefix = self.prefix.unsqueeze(0).expand(batch, -1, -1, -1)  # (B, C, s, D)
        suffix = self.suffix.unsqueeze(0).expand(batch, -1, -1, -1)  # (B, C, L - s - n_ctx, D)
        return self._mark(torch.cat([prefix, context, suffix], dim=2).to(self.dtype), num_classes)

    @property
    def ids(self) -> Tensor:
        """Token ids in the assembled order (the EOS position is the same in every layout)."""
        return self.token_ids if self.order is None else torch.gather(self.token_ids, 1, self.order)


def _gather_positions(prompts: Tensor, order: Tensor) -> Tensor:
    """prompts (C, L, D), order (C, L) -> prompts[c, order[c, j]]."""
    return torch.gather(prompts, 1, order.unsqueeze(-1).expand(-1, -1, prompts.shape[-1]))


def register_teacher(
    method: nn.Module, backbone: ClipBackbone, classnames: Sequence[str], template: str | None
) -> None:
    """Give ``method`` a ``teacher_text`` buffer (C, D): frozen zero-shot features of ``template`` for this class list
    (computed once per class list, never per step). No-op without a template (the loop's ``zs_text_features`` serve)."""
    if template is not None:
        teacher = zero_shot_text_features(backbone, classnames, template)
        method.register_buffer("teacher_text", teacher, persistent=False)


def encode_prompt_rows(backbone: ClipBackbone, embeddings: Tensor, token_ids: Tensor, *, chunk_rows: int) -> Tensor:
    """Text features (N, E) of N prompt rows, encoded ``chunk_rows`` rows at a time (bounded activation memory).

    Rows are independent sequences, so chunking is exact. Used for per-image prompts, where N = B * C. Chunks start
    at a group boundary of a marked shared prefix, so each chunk still encodes each of its groups' prefix once;
    under a gradient, the backbone's memory budget also bounds what the chunks keep for backward.
    """
    shared = marked_shared_prefix(embeddings)
    if shared is not None:
        chunk_rows = max(chunk_rows // shared.group_size, 1) * shared.group_size
    chunks = [
        backbone.encode_text_embeddings(
            embeddings[start : start + chunk_rows], token_ids[start : start + chunk_rows], shared_prefix=shared
        )
        for start in range(0, embeddings.shape[0], chunk_rows)
    ]
    return torch.cat(chunks)
