"""Backbone families: which towers the facade hosts, and what each can do for a prompt method.

A family is named from the model itself (never from a user string), so that a method or a lever the towers cannot
host is refused with one line that names the family and the reason, before any training. The levers of
`calprompt.clip.text_plan` are exact only for a causal text tower (`Family.causal_text`); visual prompt tokens need
open_clip's own ``VisionTransformer`` (`Family.visual_prompts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import open_clip
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import TextTransformer, VisionTransformer
from torch import nn

from calprompt._validation import fail

SUPPORTED = (
    "CLIP (open_clip CLIP with a ViT or ResNet image tower; transformers CLIPModel, converted)",
    "SigLIP-style (open_clip CustomTextCLIP: bidirectional text pooled at the last token, timm image tower)",
    "EVA-CLIP (timm EVA image tower, CLIP text tower)",
)

_COCA = "a CoCa model (contrastive + captioning: its text tower feeds a multimodal decoder)"


@dataclass(frozen=True)
class Family:
    """What a backbone's towers are, as far as prompt methods care."""

    name: str
    causal_text: bool  # the exact text levers (truncation, length groups, shared prefix) apply
    visual_prompts: bool  # visual prompt tokens can be placed inside its image tower's blocks
    vision: str  # the image tower, in words (for error messages)


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
    if type(model) is CLIP:
        name = "clip" if is_vit else "clip-resnet" if type(visual).__name__ == "ModifiedResNet" else "clip-other"
        return Family(name, causal_text=model.attn_mask is not None, visual_prompts=is_vit, vision=vision)
    if type(model) is CustomTextCLIP and isinstance(model.text, TextTransformer):
        trunk = getattr(getattr(visual, "trunk", None), "__class__", type(None)).__name__
        vision = f"timm {trunk}" if trunk != "NoneType" else vision
        causal = model.text.attn_mask is not None
        name = "eva" if trunk == "Eva" else "siglip" if not causal else "custom-text-clip"
        return Family(name, causal_text=causal, visual_prompts=is_vit, vision=vision)
    refuse_family(type(model).__name__, _reason(model))


def _reason(model: nn.Module) -> str:
    if type(model).__name__ == "CoCa":
        return _COCA
    text = getattr(model, "text", None)
    if text is not None and type(text).__name__ == "HFTextEncoder":
        return "a CustomTextCLIP with a Hugging Face (BERT-style) text encoder, which calprompt does not host yet"
    return f"an open_clip {type(model).__name__}"


def refuse_family(what: str, reason: str) -> NoReturn:
    fail("backbone family", f"one of: {'; '.join(SUPPORTED)}", f"{what}: {reason}")


def refuse_unsupported_architecture(architecture: str) -> None:
    """Refuse, from its config alone (nothing is built or downloaded), an open_clip architecture of a family the
    facade does not host."""
    cfg = open_clip.get_model_config(architecture) or {}
    if "multimodal_cfg" in cfg:
        refuse_family(
            architecture, "a CoCa model (contrastive + captioning, its text tower feeds a multimodal decoder)"
        )
    if cfg.get("text_cfg", {}).get("hf_model_name"):
        refuse_family(
            architecture,
            f"a CLIP with the Hugging Face text encoder {cfg['text_cfg']['hf_model_name']} (BERT-style), "
            "which calprompt does not host yet",
        )
