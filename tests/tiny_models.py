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


# Tiny timm image towers of the SigLIP (attention-pooled ViT) and EVA-CLIP (EVA-02) kinds, registered with timm under
# these names so that open_clip configs (and `local-dir:` folders) can name them like the real ones.
TINY_TIMM_TOWERS = {
    "calprompt_tiny_siglip_vit": ("vit_base_patch16_siglip_224", {"embed_dim": 32, "num_heads": 2}),
    "calprompt_tiny_eva02": ("eva02_base_patch16_clip_224", {"embed_dim": 48, "num_heads": 2}),
}
_TIMM_COMMON = {"img_size": 32, "patch_size": 8, "depth": 2}


def register_tiny_timm_towers() -> None:
    import timm
    from timm.models import register_model

    for name, (base, options) in TINY_TIMM_TOWERS.items():
        if name in timm.list_models(name):
            continue

        def build(pretrained: bool = False, *, _base: str = base, _options: dict = options, **kwargs):
            return timm.create_model(_base, pretrained=False, **{**_TIMM_COMMON, **_options, **kwargs})

        build.__name__ = name
        register_model(build)


def siglip_style_cfg(context_length: int = 16) -> dict:
    """A SigLIP-style open_clip config: bidirectional text read at the last position (padding attended, as in
    SigLIP), a projection with bias, a timm ViT with attention pooling, a logit bias; CLIP's vocabulary."""
    return {
        "embed_dim": 32,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 32,
            "timm_model_name": "calprompt_tiny_siglip_vit",
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
        },
    }


def eva_style_cfg() -> dict:
    """An EVA-CLIP-style open_clip config: a timm EVA-02 image tower, CLIP's causal text tower."""
    return {
        "embed_dim": 32,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 32,
            "timm_model_name": "calprompt_tiny_eva02",
            "timm_model_pretrained": False,
            "timm_pool": "token",
            "timm_proj": None,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }


def save_open_clip_dir(folder, cfg: dict, seed: int = 0):
    """Build ``cfg`` at random init (seeded) and save it as a `local-dir:` folder; returns the model (eval mode)."""
    import json

    from safetensors.torch import save_file

    register_tiny_timm_towers()
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"}).eval()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return model


def save_tiny_bert_text(folder) -> None:
    """A small BERT config and a WordPiece vocabulary written by the test (letters as word starts and ``##`` pieces,
    plus the words of "a photo of a"), saved where open_clip's HFTextEncoder and AutoTokenizer read them."""
    from transformers import BertConfig, BertTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "'", "-", "photo", "of"]
    vocab += [*letters, *(f"##{char}" for char in letters)]
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    config.save_pretrained(folder)


def bert_text_cfg(bert_folder, pooler: str = "mean_pooler") -> dict:
    """A BiomedCLIP-style open_clip config: the BERT tower in ``bert_folder`` (random init), an MLP projection, a
    24-token tokenizer context, a tiny open_clip ViT."""
    return {
        "embed_dim": 16,
        "custom_text": True,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 48, "layers": 2, "head_width": 16},
        "text_cfg": {
            "hf_model_name": str(bert_folder),
            "hf_tokenizer_name": str(bert_folder),
            "hf_model_pretrained": False,
            "hf_proj_type": "mlp",
            "hf_pooler_type": pooler,
            "context_length": 24,
        },
    }


# Sentences the tiny SentencePiece model is trained on: the test prompts, class names and templates.
SENTENCEPIECE_CORPUS = (
    "a photo of a red circle",
    "a photo of a blue square",
    "a photo of a golden retriever",
    "a cat on a mat",
    "red square red triangle red cross red star red ring",
    "a photo of the dog",
)


def save_tiny_sentencepiece_tokenizer(folder):
    """Train a T5-style SentencePiece model (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no start token, as SigLIP's)
    on `SENTENCEPIECE_CORPUS` and save it as a Hugging Face tokenizer folder (what open_clip's ``HFTokenizer`` reads);
    returns the ``sentencepiece`` processor, an oracle independent of ``transformers``."""
    import io

    import sentencepiece as spm
    from transformers import T5Tokenizer

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(  # whole words as pieces: "a photo of a" is 4 pieces, as in SigLIP's vocabulary
        sentence_iterator=iter(SENTENCEPIECE_CORPUS),
        model_writer=proto,
        vocab_size=64,
        hard_vocab_limit=False,
        model_type="word",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    folder.mkdir(parents=True, exist_ok=True)
    T5Tokenizer(vocab=pieces, extra_ids=0).save_pretrained(folder)
    return processor


def siglip_sentencepiece_cfg(vocab_size: int, context_length: int = 16) -> dict:
    """`siglip_style_cfg` with its own vocabulary and tokenizer named the way open_clip's ``ViT-B-16-SigLIP.json``
    names it (``hf_tokenizer_name``, ``tokenizer_kwargs.clean = "canonicalize"``); a `local-dir:` folder holds it."""
    cfg = siglip_style_cfg(context_length)
    cfg["text_cfg"].update(
        vocab_size=vocab_size, hf_tokenizer_name="timm/tiny-test", tokenizer_kwargs={"clean": "canonicalize"}
    )
    return cfg
