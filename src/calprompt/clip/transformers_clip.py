"""Hugging Face ``transformers`` CLIP checkpoints (``CLIPModel`` folders and hub ids) as open_clip ``CLIP`` models.

A ``CLIPModel`` is the architecture of open_clip's ``CLIP`` under other parameter names (separate q/k/v projections,
``fc1``/``fc2``, projections stored as ``Linear`` weights), so it is converted once on load: the backbone facade and
every exact lever then apply unchanged. The checkpoint's own tokenizer is kept (`HubTokenizer`), and the text is
pooled where ``transformers`` pools it (the first end-of-text token, or the largest id for old configs).

``transformers`` is an optional dependency (``pip install calprompt[hf]``); nothing here imports it at module load.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import Tensor

from calprompt._validation import fail
from calprompt.clip.backbone import Preprocess
from calprompt.clip.missing import WeightsNotFoundError, hub_cache_dir, offline

PREFIX = "transformers:"
# Files from which `transformers` can build a tokenizer (one of them must be present in a local folder).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
# transformers' own rule: configs written before its fix of the end-of-text id say 2 and pool at the largest id.
_LEGACY_EOS_ID = 2


class HubTokenizer:
    """A ``transformers`` tokenizer with the interface of open_clip's: ``tokenizer(texts)`` gives (N, context) ids
    with the tokenizer's special tokens, padded with its pad id; ``encode(text)`` gives the ids without them.

    ``clean`` is applied to every text first (open_clip's ``HFTokenizer`` cleans with its ``clean_fn``: SigLIP's
    lowercases and drops punctuation), so that the ids equal open_clip's tokenizer's.
    """

    def __init__(self, tokenizer: Any, context_length: int, clean: Callable[[str], str] | None = None) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.clean = clean

    def __call__(self, texts: str | Sequence[str]) -> Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        texts = [self.clean(text) for text in texts] if self.clean else texts
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return encoded["input_ids"].long()

    def encode(self, text: str) -> list[int]:
        text = self.clean(text) if self.clean else text
        return list(self.tokenizer.encode(text, add_special_tokens=False))


def is_transformers_name(name: str) -> bool:
    return name.startswith(PREFIX)


def load_transformers_clip(
    name: str, *, device: str | torch.device, precision: str, cache_dir: str | None
) -> tuple[CLIP, HubTokenizer, Preprocess]:
    """Load ``transformers:DIR_OR_HUB_ID`` and convert it to an open_clip ``CLIP`` (fp32 weights, then cast)."""
    source = name.removeprefix(PREFIX)
    if not source:
        fail(
            "backbone",
            "'transformers:' followed by a folder or a hub id (transformers:openai/clip-vit-base-patch16)",
            name,
        )
    transformers = _import_transformers(name)
    folder = Path(source).expanduser()
    local = folder.is_dir() or source.startswith(("/", ".", "~"))  # a hub id is "org/name"
    if local:
        _check_local_folder(name, folder)
    where = _Source(name, source, folder if local else None, cache_dir)
    hf_model = where.load(transformers.CLIPModel, "weights", "`CLIPModel.save_pretrained` (config.json + weights)")
    if type(hf_model).__name__ != "CLIPModel":
        fail(name, "a transformers CLIPModel checkpoint", type(hf_model).__name__)
    hf_tokenizer = where.load(transformers.AutoTokenizer, "tokenizer", "`tokenizer.save_pretrained(folder)`")
    model = convert_clip_model(hf_model).to(device=device)
    if precision != "fp32":
        from open_clip.model import convert_weights_to_lp

        convert_weights_to_lp(model, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
    tokenizer = HubTokenizer(hf_tokenizer, context_length=model.context_length)
    return model.eval(), tokenizer, _preprocess(folder if local else None, hf_model.config.vision_config.image_size)


@dataclass(frozen=True)
class _Source:
    """Where a `transformers:` checkpoint is read from: a local folder (never the network) or a hub id."""

    name: str
    source: str
    folder: Path | None
    cache_dir: str | None

    def load(self, loader: Any, what: str, writer: str) -> Any:
        """``loader.from_pretrained`` of the folder or hub id; a failure names what, where, and the fix."""
        local = self.folder is not None
        try:
            return loader.from_pretrained(
                str(self.folder) if local else self.source, cache_dir=self.cache_dir, local_files_only=local or None
            )
        except (OSError, ValueError) as error:
            if local:
                raise WeightsNotFoundError(
                    f"Could not load the {what} of '{self.name}' from {self.folder} ({type(error).__name__}: "
                    f"{error}). Write the folder with {writer}."
                ) from error
            raise _hub_failure(self.name, self.source, self.cache_dir, error, what) from error


def _hub_failure(name: str, repo: str, cache_dir: str | None, error: Exception, what: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"Could not load the {what} of '{name}': looked in the Hugging Face cache {hub_cache_dir(cache_dir)} for "
        f"repository {repo}{' with HF_HUB_OFFLINE set' if offline() else ''} ({type(error).__name__}: {error}). "
        f"To fix: download it once with network access (`hf download {repo}`), or point transformers: at a local "
        "folder written by `save_pretrained`."
    )


def _import_transformers(name: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"backbone '{name}' needs the optional dependency `transformers`; install it with "
            "`pip install 'calprompt[hf]'`."
        ) from None
    return transformers


def _check_local_folder(name: str, folder: Path) -> None:
    """A folder must hold the model config and tokenizer files: say which path is missing before loading anything."""
    if not folder.is_dir():
        raise WeightsNotFoundError(
            f"'{name}': expected a transformers CLIPModel folder, but {folder} does not exist (looked for "
            f"{folder / 'config.json'}). Point transformers: at a folder written by `CLIPModel.save_pretrained`."
        )
    if not (folder / "config.json").is_file():
        raise WeightsNotFoundError(
            f"'{name}': expected a transformers CLIPModel folder with config.json, but {folder / 'config.json'} does "
            "not exist. Save the model with `CLIPModel.save_pretrained(folder)`."
        )
    if not any((folder / file).is_file() for file in TOKENIZER_FILES):
        looked = " or ".join(str(folder / file) for file in TOKENIZER_FILES)
        raise WeightsNotFoundError(
            f"'{name}': expected the checkpoint's tokenizer files in the folder, but neither {looked} exists. "
            "Save the tokenizer beside the model with `tokenizer.save_pretrained(folder)`."
        )


def _preprocess(folder: Path | None, image_size: int) -> Preprocess:
    """Mean/std/size from the folder's ``preprocessor_config.json`` when it has one, else CLIP's at the model's size."""
    path = folder / "preprocessor_config.json" if folder is not None else None
    if path is None or not path.is_file():
        return Preprocess(image_size=int(image_size))
    cfg = json.loads(path.read_text())
    size = cfg.get("crop_size", image_size)
    size = size.get("height", image_size) if isinstance(size, dict) else size
    return Preprocess(
        image_size=int(size),
        mean=tuple(cfg.get("image_mean", Preprocess.mean)),
        std=tuple(cfg.get("image_std", Preprocess.std)),
    )


def convert_clip_model(hf_model: Any) -> CLIP:
    """An open_clip ``CLIP`` holding the weights of a ``transformers`` ``CLIPModel`` (same outputs)."""
    config = hf_model.config
    text, vision = config.text_config, config.vision_config
    activations = {text.hidden_act, vision.hidden_act}
    if not activations <= {"quick_gelu", "gelu"} or len(activations) != 1:
        fail(f"{type(hf_model).__name__} hidden_act", "'quick_gelu' or 'gelu' in both towers", sorted(activations))
    legacy = text.eos_token_id == _LEGACY_EOS_ID
    text_cfg = CLIPTextCfg(
        context_length=text.max_position_embeddings,
        vocab_size=text.vocab_size,
        width=text.hidden_size,
        heads=text.num_attention_heads,
        layers=text.num_hidden_layers,
        mlp_ratio=text.intermediate_size / text.hidden_size,
        pool_type="argmax" if legacy else "eos",
        eos_id=text.eos_token_id,
        norm_kwargs={"eps": text.layer_norm_eps},
    )
    vision_cfg = CLIPVisionCfg(
        layers=vision.num_hidden_layers,
        width=vision.hidden_size,
        head_width=vision.hidden_size // vision.num_attention_heads,
        mlp_ratio=vision.intermediate_size / vision.hidden_size,
        patch_size=vision.patch_size,
        image_size=vision.image_size,
        norm_kwargs={"eps": vision.layer_norm_eps},
    )
    model = CLIP(
        embed_dim=config.projection_dim,
        vision_cfg=vision_cfg,
        text_cfg=text_cfg,
        quick_gelu=text.hidden_act == "quick_gelu",
    )
    model.load_state_dict(convert_state_dict(hf_model.state_dict(), text.num_hidden_layers, vision.num_hidden_layers))
    return model.eval()


def convert_state_dict(state: dict[str, Tensor], text_layers: int, vision_layers: int) -> dict[str, Tensor]:
    """``CLIPModel`` parameter names and layouts -> open_clip ``CLIP``'s."""
    out = {
        "logit_scale": state["logit_scale"],
        "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": state["text_model.final_layer_norm.weight"],
        "ln_final.bias": state["text_model.final_layer_norm.bias"],
        "text_projection": state["text_projection.weight"].t(),  # Linear (E, D) -> open_clip's (D, E)
        "visual.class_embedding": state["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": state["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": state["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": state["vision_model.pre_layrnorm.weight"],  # sic: transformers' spelling
        "visual.ln_pre.bias": state["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": state["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": state["vision_model.post_layernorm.bias"],
        "visual.proj": state["visual_projection.weight"].t(),
    }
    for source, target, layers in (
        ("text_model", "transformer", text_layers),
        ("vision_model", "visual.transformer", vision_layers),
    ):
        for index in range(layers):
            out.update(_convert_block(state, f"{source}.encoder.layers.{index}.", f"{target}.resblocks.{index}."))
    return {key: value.detach().clone().contiguous() for key, value in out.items()}


def _convert_block(state: dict[str, Tensor], source: str, target: str) -> dict[str, Tensor]:
    """One encoder layer: q/k/v projections packed into ``nn.MultiheadAttention``'s ``in_proj`` (q, k, v order)."""
    attention = f"{source}self_attn."
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    out = {
        f"{target}attn.in_proj_weight": torch.cat([state[f"{attention}{p}_proj.weight"] for p in "qkv"]),
        f"{target}attn.in_proj_bias": torch.cat([state[f"{attention}{p}_proj.bias"] for p in "qkv"]),
        f"{target}attn.out_proj.weight": state[f"{attention}out_proj.weight"],
        f"{target}attn.out_proj.bias": state[f"{attention}out_proj.bias"],
    }
    for old, new in names.items():
        for kind in ("weight", "bias"):
            out[f"{target}{new}.{kind}"] = state[f"{source}{old}.{kind}"]
    return out
