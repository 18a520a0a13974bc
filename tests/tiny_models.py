"""Tiny open_clip models for tests: real tokenizer vocabulary, random init, built in milliseconds."""

from __future__ import annotations

import open_clip
import torch

# A tiny CLIP with the real tokenizer's vocabulary and the full 77-token context.
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 48, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
}


def make_tiny_clip(seed: int = 0, quick_gelu: bool = False) -> open_clip.CLIP:
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CFG, quick_gelu=quick_gelu)
    return model.eval()


# A CLIP BPE vocabulary written by the tests: single characters, plus merges for the words of CoOp's default
# context "a photo of a" (so that it is 4 tokens, as with CLIP's vocabulary); other words are spelled letter by letter.
TINY_HF_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,'-"
TINY_HF_WORDS = ("photo", "of")


def _tiny_bpe() -> tuple[dict[str, int], list[str]]:
    symbols = [*TINY_HF_CHARACTERS, *(f"{char}</w>" for char in TINY_HF_CHARACTERS)]
    merges = []
    for word in TINY_HF_WORDS:
        merged = word[0]
        for index, char in enumerate(word[1:], start=1):
            piece = char + ("</w>" if index == len(word) - 1 else "")
            merges.append(f"{merged} {piece}")
            merged += piece
            symbols.append(merged)
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    return {symbol: index for index, symbol in enumerate(symbols)}, merges


def save_tiny_transformers_clip(folder, seed: int = 0, hidden_act: str = "quick_gelu", tokenizer: bool = True):
    """A random-init ``transformers`` ``CLIPModel`` (32 px images, 24-token context) saved with ``save_pretrained``,
    with a tokenizer whose vocabulary the test writes; returns the model (eval mode)."""
    import json

    from transformers import CLIPConfig, CLIPModel

    vocab, merges = _tiny_bpe()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    common = {"hidden_act": hidden_act, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            **common,
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 80,
            "max_position_embeddings": 24,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={**common, "hidden_size": 48, "intermediate_size": 96, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    if tokenizer:
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))
    return model
