"""Load a frozen CLIP backbone by name: open_clip built-ins with hub tags, local files, hub/local dirs, embedded models.

Every failure to find weights is turned into one :class:`WeightsNotFoundError` that says what was asked, where we looked
and how to fix it, so that an offline machine fails in seconds instead of spending minutes in download retries.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP
from open_clip.pretrained import download_pretrained_from_hf
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor

from calprompt._validation import check_choice, fail
from calprompt.clip.backbone import ClipBackbone, Preprocess
from calprompt.clip.families import (
    CLIP_VOCABULARY,
    OTHER_TOKENIZERS,
    family_of,
    refuse_unsupported_architecture,
    refuse_unsupported_config,
)
from calprompt.clip.missing import WeightsNotFoundError, how_to_fix, hub_cache_dir, hub_failure, offline, one_line
from calprompt.clip.transformers_clip import HubTokenizer, is_transformers_name, load_transformers_clip
from calprompt.plugins import EMBEDDED_BACKBONES

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")

# Backbones shipped with the package: name -> "module:function(pretrained, device, precision) -> ClipBackbone".


def load_clip(
    name: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    quick_gelu: bool | None = None,
    trust_torchscript: bool = False,
    cache_dir: str | None = None,
) -> ClipBackbone:
    """Load a frozen CLIP backbone.

    Args:
        name: an open_clip architecture (``"ViT-B-16"``), ``"hf-hub:org/repo"``, ``"local-dir:/path"`` (a folder with
            ``open_clip_config.json`` and weights), ``"transformers:DIR_OR_HUB_ID"`` (a ``transformers`` ``CLIPModel``
            with its tokenizer, converted on load; needs ``calprompt[hf]``), or an embedded model (``"toy"``).
        pretrained: for architectures, a hub tag (``"openai"``, ``"laion2b_s34b_b88k"``) or a local weights file (state
            dict, ``.safetensors``, or an OpenAI TorchScript ``.pt`` archive); ``None`` gives random init.
        quick_gelu: force the activation; ``None`` decides from the source (always QuickGELU for OpenAI weights,
            TorchScript archives and ``*-quickgelu`` names).
        trust_torchscript: OpenAI TorchScript archives can run code when loaded; they are only read when the caller
            says the file is trusted.
    """
    check_choice(precision, "precision", PRECISIONS)
    if name in EMBEDDED_BACKBONES:
        module_name, function_name = EMBEDDED_BACKBONES[name].split(":")
        loader = getattr(importlib.import_module(module_name), function_name)
        return loader(pretrained=pretrained, device=device, precision=precision)
    if name.startswith(("local-dir:", "hf-hub:")):
        if pretrained is not None:
            fail(
                "pretrained", f"None for '{name}' (its folder or hub repository already names the weights)", pretrained
            )
        cfg = _schema_config(name, cache_dir)  # the small config first: a refused family downloads no weights
        refuse_unsupported_config(name, cfg)
        tokenizer = _configured_tokenizer(name, cfg)
        model = _create_from_schema(name, device=device, precision=precision, cache_dir=cache_dir)
        return wrap_open_clip_model(model, name=name, pretrained=None, tokenizer=tokenizer)
    if is_transformers_name(name):
        if pretrained is not None:
            fail("pretrained", f"None for '{name}' (its folder or hub id already names the weights)", pretrained)
        model, tokenizer, preprocess = load_transformers_clip(
            name, device=device, precision=precision, cache_dir=cache_dir
        )
        return wrap_open_clip_model(model, name=name, preprocess=preprocess, tokenizer=tokenizer)

    architecture = _resolve_architecture(name)
    refuse_unsupported_architecture(architecture)
    tokenizer = _configured_tokenizer(architecture, open_clip.get_model_config(architecture) or {})
    if pretrained is None:
        logger.info("Building %s with random weights (no `pretrained` given).", architecture)
        model = open_clip.create_model(
            architecture, device=device, precision=precision, force_quick_gelu=bool(quick_gelu)
        )
    elif open_clip.get_pretrained_cfg(architecture, pretrained):
        model = _create_from_tag(
            architecture, pretrained, device=device, precision=precision, quick_gelu=quick_gelu, cache_dir=cache_dir
        )
    elif Path(pretrained).expanduser().is_file():
        model = _create_from_file(
            architecture,
            Path(pretrained).expanduser(),
            device=device,
            precision=precision,
            quick_gelu=quick_gelu,
            trust_torchscript=trust_torchscript,
        )
    else:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        raise WeightsNotFoundError(
            f"`pretrained={pretrained!r}` is neither a known tag of {architecture} "
            f"(known: {', '.join(tags) or 'none'}) nor an existing file (looked for "
            f"{Path(pretrained).expanduser().resolve()}). Pass a tag, or the path to a downloaded weights file."
        )
    identity = None
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        identity = f"{architecture}|file:{file_digest(Path(pretrained).expanduser())}"
    return wrap_open_clip_model(model, name=architecture, pretrained=pretrained, identity=identity, tokenizer=tokenizer)


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """A short content hash of a weights file (size + sha256 of its first and last MiB), for feature-cache keys."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as stream:
        digest.update(stream.read(chunk))
        if size > chunk:
            stream.seek(max(size - chunk, chunk))
            digest.update(stream.read(chunk))
    return digest.hexdigest()[:16]


def check_backbone_name(name: str) -> str:
    """Refuse an unknown backbone name without loading anything: embedded models, ``hf-hub:`` / ``local-dir:``
    names (a ``local-dir:`` folder must exist) and open_clip architectures pass."""
    if name in EMBEDDED_BACKBONES or name.startswith("hf-hub:"):
        return name
    if is_transformers_name(name):
        if not name.removeprefix("transformers:"):
            fail("backbone", "'transformers:' followed by a folder or a hub id", name)
        return name
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:")).expanduser()
        if not folder.is_dir():
            fail("backbone", f"'local-dir:' and an existing folder ({folder} does not exist)", name)
        return name
    try:
        architecture = _resolve_architecture(name)
    except ValueError as error:
        raise ValueError(str(error).replace("`name`", "`backbone`", 1)) from None
    refuse_unsupported_architecture(architecture)
    return architecture


def _resolve_architecture(name: str) -> str:
    cleaned = name.replace("/", "-")
    known = open_clip.list_models()
    if cleaned not in known:
        close = difflib.get_close_matches(cleaned, known, n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        fail(
            "name",
            "an open_clip architecture, 'hf-hub:...', 'local-dir:...', 'transformers:...' or one of "
            f"{sorted(EMBEDDED_BACKBONES)}"
            f".{hint} (see `open_clip.list_models()`)",
            name,
        )
    return cleaned


def _create_from_tag(
    architecture: str,
    tag: str,
    *,
    device: str | torch.device,
    precision: str,
    quick_gelu: bool | None,
    cache_dir: str | None,
) -> CLIP:
    cfg = open_clip.get_pretrained_cfg(architecture, tag)
    tag_quick_gelu = bool(cfg.get("quick_gelu", False)) or tag == "openai"
    if quick_gelu is not None and quick_gelu != tag_quick_gelu:
        fail("quick_gelu", f"{tag_quick_gelu} (or None) for the weights '{architecture}/{tag}'", quick_gelu)
    hub_repo = cfg.get("hf_hub") or None
    try:
        return open_clip.create_model(
            architecture,
            pretrained=tag,
            device=device,
            precision=precision,
            force_quick_gelu=tag_quick_gelu,
            cache_dir=cache_dir,
        )
    except Exception as error:  # open_clip raises RuntimeError/OSError/HF errors: one clear message instead
        where = (
            f"the Hugging Face cache {hub_cache_dir(cache_dir)} (repository {hub_repo})"
            if hub_repo
            else cfg.get("url", "its download URL")
        )
        raise WeightsNotFoundError(
            f"Could not load pretrained weights '{architecture}' / '{tag}': looked in {where}"
            f"{' with HF_HUB_OFFLINE set' if offline() else ''} ({type(error).__name__}: {error}). "
            f"To fix: {how_to_fix(hub_repo, architecture)}"
        ) from error


def _is_torchscript_archive(path: Path) -> bool:
    """OpenAI's original .pt files are TorchScript zip archives (they carry a ``code/`` folder)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in member or member.endswith("constants.pkl") for member in archive.namelist())


def _create_from_file(
    architecture: str,
    path: Path,
    *,
    device: str | torch.device,
    precision: str,
    quick_gelu: bool | None,
    trust_torchscript: bool,
) -> CLIP:
    if _is_torchscript_archive(path):
        if not trust_torchscript:
            raise PermissionError(
                f"{path} is a TorchScript archive (the original OpenAI CLIP format). Loading one can execute code, "
                "so it is only read when you trust the file: pass `trust_torchscript=True` "
                "(CLI: --trust-torchscript), or convert it once to safetensors."
            )
        if quick_gelu is False:
            fail("quick_gelu", "True or None for an OpenAI TorchScript archive (OpenAI weights use QuickGELU)", False)
        model = open_clip.load_openai_model(str(path), precision=precision, device=device)
        return model
    use_quick_gelu = bool(quick_gelu) if quick_gelu is not None else architecture.endswith("quickgelu")
    if quick_gelu is None and "openai" in path.name.lower():
        use_quick_gelu = True
        logger.info("Using QuickGELU for %s: its name says it holds OpenAI weights.", path)
    try:
        return open_clip.create_model(
            architecture, pretrained=str(path), device=device, precision=precision, force_quick_gelu=use_quick_gelu
        )
    except (RuntimeError, KeyError, ValueError) as error:
        raise ValueError(
            f"Could not load weights file {path} into {architecture} ({error}). Check that the file holds weights of "
            "this architecture (an open_clip or OpenAI state dict, or safetensors)."
        ) from error


def _schema_config(name: str, cache_dir: str | None) -> dict:
    """The ``model_cfg`` of a ``local-dir:`` folder or ``hf-hub:`` repository, read from its open_clip_config.json
    alone (for a hub repository only that small file is downloaded)."""
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:")).expanduser()
        path = folder / "open_clip_config.json"
        if not path.is_file():
            raise WeightsNotFoundError(
                f"'{name}': expected a folder holding open_clip_config.json (with 'model_cfg') and a weights file, "
                f"but {path} does not exist. Point local-dir: at such a folder."
            )
    else:
        repo = name.removeprefix("hf-hub:")
        try:
            path = Path(download_pretrained_from_hf(repo, "open_clip_config.json", cache_dir=cache_dir))
        except Exception as error:  # hub errors, offline mode, a missing file
            raise hub_failure(name, repo, cache_dir, error, what="open_clip_config.json") from error
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config.get("model_cfg"), dict):
        fail(f"{name} open_clip_config.json", "a 'model_cfg' object (open_clip's layout)", sorted(config))
    return config["model_cfg"]


def _create_from_schema(name: str, *, device: str | torch.device, precision: str, cache_dir: str | None) -> CLIP:
    if name.startswith("local-dir:"):
        return open_clip.create_model(name, device=device, precision=precision)
    try:
        return open_clip.create_model(name, device=device, precision=precision, cache_dir=cache_dir)
    except Exception as error:
        raise hub_failure(name, name.removeprefix("hf-hub:"), cache_dir, error) from error


def preprocess_of(model: CLIP) -> Preprocess:
    """The preprocessing open_clip recorded for this model (size, mean/std, interpolation)."""
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = size[0] if isinstance(size, tuple | list) else size
    mean = tuple(cfg.get("mean", Preprocess.mean))
    std = tuple(cfg.get("std", Preprocess.std))
    return Preprocess(image_size=int(size), mean=mean, std=std, interpolation=cfg.get("interpolation", "bicubic"))


def _configured_tokenizer(name: str, cfg: dict) -> HubTokenizer | None:
    """The Hugging Face tokenizer a model's config names (``text_cfg.hf_tokenizer_name``: BERT text towers, SigLIP's
    SentencePiece and Gemma tokenizers), or None for CLIP's BPE tokenizer. Read before the weights, so that a
    missing tokenizer fails in seconds."""
    if not cfg.get("text_cfg", {}).get("hf_tokenizer_name"):
        return None
    text_cfg = cfg["text_cfg"]
    return _open_clip_hf_tokenizer(name, int(text_cfg.get("context_length", 77)), text_cfg["hf_tokenizer_name"])


def _open_clip_hf_tokenizer(name: str, context_length: int, source: str | None = None) -> HubTokenizer:
    """The Hugging Face tokenizer open_clip builds for ``name`` (its ``HFTokenizer``: the configured tokenizer,
    cleaning and context length), with the ``encode`` the backbone needs."""
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as error:  # open_clip/transformers raise OSError, ValueError, HF errors
        raise WeightsNotFoundError(
            f"Could not load the tokenizer {source or ''} of '{name}'{' with HF_HUB_OFFLINE set' if offline() else ''} "
            f"({one_line(error)}). To fix: download it once with network access"
            f"{f' (`hf download {source}`)' if source and not name.startswith('local-dir:') else ''}, or pass "
            "`tokenizer=` to wrap_open_clip_model."
        ) from error
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is None:
        fail(f"{name} tokenizer", "a Hugging Face tokenizer (open_clip's HFTokenizer)", type(tokenizer).__name__)
    return HubTokenizer(
        inner,
        context_length=int(getattr(tokenizer, "context_length", None) or context_length),
        clean=getattr(tokenizer, "clean_fn", None),
    )


def wrap_open_clip_model(
    model: CLIP,
    *,
    name: str,
    pretrained: str | None = None,
    preprocess: Preprocess | None = None,
    identity: str | None = None,
    tokenizer: Callable[..., Tensor] | None = None,
) -> ClipBackbone:
    """Freeze an open_clip ``CLIP`` behind the backbone interface, with ``tokenizer`` (by default the standard CLIP
    tokenizer, which needs the 49408-token vocabulary)."""
    family = family_of(model)  # refuses a family the facade does not host, naming it
    if tokenizer is None and family.name == "bert-text":
        tokenizer = _open_clip_hf_tokenizer(name, model.context_length)
    if tokenizer is None and model.vocab_size != CLIP_VOCABULARY:
        fail(f"{name} vocab_size", f"{CLIP_VOCABULARY} (CLIP's BPE tokenizer; {OTHER_TOKENIZERS})", model.vocab_size)
    tokenizer = tokenizer or SimpleTokenizer(context_length=model.context_length)
    return ClipBackbone(
        model,
        tokenizer,
        name=name,
        pretrained=pretrained,
        preprocess=preprocess or preprocess_of(model),
        identity=identity,
    )
