"""BERT-style text towers (open_clip ``CustomTextCLIP`` with an ``HFTextEncoder``: BiomedCLIP, QuiltNet-PMB).

The tower is bidirectional with a padding mask, pooled at [CLS] or by a masked mean, then projected. Prompt learners
hand token embeddings as for CLIP: position 0 is [CLS], so the learnable context follows it. The embeddings go in as
``inputs_embeds`` (BERT adds its positional and token-type embeddings and its LayerNorm, as for ids), the mask comes
from the ids. Rows are cut after their last non-padding token: exact, because padding is masked and positions count
from 0 in every row. Nothing else of `calprompt.clip.text_plan` applies: its shared prefix needs a causal mask, and
deep text prompts need hooks into the Hugging Face layers, which are not placed (methods that use them are refused).
"""

from __future__ import annotations

from torch import Tensor, nn

from calprompt._validation import fail

# Hugging Face model types whose embeddings treat ``inputs_embeds`` exactly as the ids' embeddings (positions from 0).
HOSTED_MODEL_TYPES = ("bert",)


def is_bert_text(text: nn.Module) -> bool:
    return type(text).__name__ == "HFTextEncoder"


def check_hosted(text: nn.Module) -> str | None:
    """Why this HF text tower cannot be hosted, or None."""
    model_type = getattr(text.config, "model_type", "?")
    if model_type not in HOSTED_MODEL_TYPES:
        return f"a Hugging Face {model_type} text encoder (hosted: {', '.join(HOSTED_MODEL_TYPES)})"
    if type(text.pooler).__name__ not in ("MeanPooler", "ClsPooler", "ClsLastHiddenStatePooler"):
        return f"a text tower pooled by {type(text.pooler).__name__} (hosted: mean, [CLS])"
    return None


def text_width(text: nn.Module) -> int:
    return int(text.config.hidden_size)


def text_layers(text: nn.Module) -> int:
    return int(text.config.num_hidden_layers)


def word_embeddings(text: nn.Module) -> nn.Embedding:
    return text.transformer.embeddings.word_embeddings


def last_tokens(text: nn.Module, token_ids: Tensor) -> Tensor:
    """Each row's last non-padding position (N,) (its [SEP]); padding is at the end of every row."""
    return (token_ids != text.config.pad_token_id).sum(dim=-1) - 1


def encode(text: nn.Module, embeddings: Tensor, token_ids: Tensor, truncate: bool) -> Tensor:
    """The tower on token embeddings (N, L, D) with the ids' padding mask: pooled and projected features (N, E)."""
    if truncate:
        length = int(last_tokens(text, token_ids).max()) + 1
        embeddings, token_ids = embeddings[:, :length], token_ids[:, :length]
    mask = (token_ids != text.config.pad_token_id).long()
    if not bool(mask[:, 0].all()):
        fail("token_ids", "rows starting with [CLS] (padding only at the end)", "a row starting with padding")
    out = text.transformer(inputs_embeds=embeddings, attention_mask=mask)
    return text.proj(text.pooler(out, mask))
