"""Missing weights or tokenizer files: one error type and one message form for every loader.

The message says what was asked, where it looked and how to fix it, so that an offline machine fails in seconds
instead of spending minutes in download retries.
"""

from __future__ import annotations

import os


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights could not be found locally or downloaded."""


def hub_cache_dir(cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def one_line(error: Exception) -> str:
    """``Type: message`` of a library's error on one line (hub and ``transformers`` errors span several)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def how_to_fix(hub_repo: str | None, architecture: str) -> str:
    steps = []
    if hub_repo:
        steps.append(
            f"download once with network access: `hf download {hub_repo.rstrip('/')}` "
            "(or `huggingface-cli download ...`), then run again"
        )
    steps.append(
        f"or pass a local weights file: `--pretrained /path/to/{architecture}.pt` (OpenAI archives also "
        "need --trust-torchscript) or a .safetensors/state-dict file"
    )
    if offline():
        steps.append(
            "or, if this machine has network access, unset HF_HUB_OFFLINE (it is set, so no download was tried)"
        )
    return "; ".join(steps) + "."


def hub_failure(
    name: str, repo: str, cache_dir: str | None, error: Exception, *, what: str = "weights"
) -> WeightsNotFoundError:
    """The error for a hub repository whose ``what`` (weights, tokenizer) could not be loaded."""
    return WeightsNotFoundError(
        f"Could not load the {what} of '{name}': looked in the Hugging Face cache {hub_cache_dir(cache_dir)} for "
        f"repository {repo}{' with HF_HUB_OFFLINE set' if offline() else ''} ({one_line(error)}). "
        f"To fix: {how_to_fix(repo, repo)}"
    )
