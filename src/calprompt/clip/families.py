"""Backbone families: which towers the facade hosts, and what each can do for a prompt method.

A family is named from the model itself (never from a user string), so that a method or a lever the towers cannot
host is refused with one line that names the family and the reason, before any training. The levers of
`calprompt.clip.text_plan` are exact only for a causal text tower (`Family.causal_text`); visual prompt tokens need
a ViT image tower, open_clip's own or timm's ViT / EVA (`Family.visual_prompts`, `calprompt.clip.timm_prompts`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import open_clip
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import TextTransformer, VisionTransformer
from torch import nn

from calprompt._validation import fail
from calprompt.clip import bert_text, timm_prompts

SUPPORTED = (
    "CLIP (open_clip CLIP with a ViT or ResNet image tower; transformers CLIPModel, converted)",
    "SigLIP-style (open_clip CustomTextCLIP: bidirectional text pooled at the last token, timm image tower)",
    "EVA-CLIP (timm EVA image tower, CLIP text tower)",
    "BERT-text CLIP (open_clip CustomTextCLIP with a Hugging Face BERT text encoder: BiomedCLIP, QuiltNet-PMB)",
)

CLIP_VOCABULARY = 49408  # CLIP's BPE tokenizer, the one open_clip architectures get here
OTHER_TOKENIZERS = (
    "a model with another vocabulary needs its tokenizer named in its config (text_cfg.hf_tokenizer_name, as "
    "open_clip's SigLIP configs do), or passed as wrap_open_clip_model(tokenizer=...)"
)
_COCA = "a CoCa model (contrastive + captioning: its text tower feeds a multimodal decoder)"


@dataclass(frozen=True)
class Family:
    """What a backbone's towers are, as far as prompt methods care."""

    name: str
    causal_text: bool  # the exact text levers (truncation, length groups, shared prefix) apply
    visual_prompts: bool  # visual prompt tokens can be placed inside its image tower's blocks
    vision: str  # the image tower, in words (for error messages)
    text_pool: str = "argmax"  # where the text feature is read: "argmax"/"eos" (end of text), "last" (position)
    eos_id: int | None = None  # the end-of-text id for "eos" pooling


def text_tower(model: nn.Module) -> nn.Module:
    """The module holding the text tower's parts (``token_embedding``, ``positional_embedding``, ``transformer``,
    ``ln_final``, ``text_projection``, ``attn_mask``): open_clip's ``CLIP`` itself, a ``CustomTextCLIP``'s ``text``."""
    return model if isinstance(model, CLIP) else model.text


class FamilyLimitError(ValueError):
    """A backbone family cannot host what was asked of it (a method adds the method's name to the message)."""

    def __init__(self, family: Family, need: str, reason: str) -> None:
        self.family, self.need, self.reason = family, need, reason
        super().__init__(f"backbone family '{family.name}' cannot host {need}: {reason}")


def family_of(model: nn.Module) -> Family:
    """The family of an open_clip model, or a one-line refusal naming what it is and what is supported."""
    visual = getattr(model, "visual", None)
    is_vit = isinstance(visual, VisionTransformer)
    vision = type(visual).__name__ if not is_vit else "open_clip VisionTransformer"
    if isinstance(model, CLIP):
        name = "clip" if is_vit else "clip-resnet" if type(visual).__name__ == "ModifiedResNet" else "clip-other"
        causal = model.attn_mask is not None
        pool, eos_id = model.text_pool_type, getattr(model, "text_eos_id", None)
    elif type(model) is CustomTextCLIP and isinstance(model.text, TextTransformer):
        text = model.text
        if text.cls_emb is not None or text.use_pad_mask:
            refuse_family("CustomTextCLIP", "a text tower with an appended class token or a padding mask")
        trunk = type(getattr(visual, "trunk", None)).__name__
        vision = f"timm {trunk}" if trunk != "NoneType" else vision
        causal = text.attn_mask is not None
        name = "eva" if trunk == "Eva" else "siglip" if not causal else "custom-text-clip"
        pool, eos_id = text.pool_type, text.eos_id
    elif type(model) is CustomTextCLIP and bert_text.is_bert_text(model.text):
        reason = bert_text.check_hosted(model.text)
        if reason:
            refuse_family("CustomTextCLIP", reason)
        causal, name, pool, eos_id = False, "bert-text", "bert", None
    else:
        refuse_family(type(model).__name__, _reason(model))
    pools = ("argmax", "eos") if causal else ("argmax", "eos", "last", "bert")
    if pool not in pools:
        refuse_family(type(model).__name__, f"a text tower pooled by '{pool}' (prompt learning reads one of {pools})")
    hosts_prompts = is_vit or (timm_prompts.timm_trunk(visual) is not None and not timm_prompts.unhosted_reason(visual))
    return Family(name, causal, visual_prompts=hosts_prompts, vision=vision, text_pool=pool, eos_id=eos_id)


def _reason(model: nn.Module) -> str:
    if type(model).__name__ == "CoCa":
        return _COCA
    return f"an open_clip {type(model).__name__}"


def refuse_family(what: str, reason: str) -> NoReturn:
    fail("backbone family", f"one of: {'; '.join(SUPPORTED)}", f"{what}: {reason}")


def refuse_unsupported_architecture(architecture: str) -> None:
    """Refuse, from its config alone (nothing is built or downloaded), an open_clip architecture of a family the
    facade does not host."""
    refuse_unsupported_config(architecture, open_clip.get_model_config(architecture) or {})


def refuse_unsupported_config(name: str, cfg: dict) -> None:
    """Refuse, from an open_clip ``model_cfg`` (a built-in config, or a ``local-dir:`` / ``hf-hub:`` model's
    ``open_clip_config.json``), a model of a family the facade does not host, before its weights are read."""
    text_cfg = cfg.get("text_cfg", {})
    if "multimodal_cfg" in cfg:
        refuse_family(name, _COCA)
    vocabulary = text_cfg.get("vocab_size", CLIP_VOCABULARY)
    if vocabulary != CLIP_VOCABULARY and not (text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name")):
        refuse_family(name, f"a {vocabulary}-token vocabulary and no tokenizer named in its config; {OTHER_TOKENIZERS}")
    hf_text = text_cfg.get("hf_model_name")
    if hf_text and not _names_bert(hf_text):
        refuse_family(name, f"a CLIP with the Hugging Face text encoder {hf_text} (hosted: BERT)")


def _names_bert(hf_text: str) -> bool:
    """Whether a text encoder named in a config is BERT: a local folder says so in its config.json (``model_type``),
    a hub id in its name."""
    local = Path(hf_text).expanduser() / "config.json"
    if local.is_file():
        return json.loads(local.read_text(encoding="utf-8")).get("model_type") == "bert"
    return "bert" in hf_text.lower().replace("roberta", "")
