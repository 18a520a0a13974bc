"""Fixtures for end-to-end runs: a random-init toy checkpoint and a feature cache shared by the module."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def toy_weights(tmp_path_factory):
    from calprompt.toy.model import build_toy_clip, save_toy_checkpoint

    torch.manual_seed(0)
    return str(save_toy_checkpoint(build_toy_clip(), tmp_path_factory.mktemp("toy") / "toy.safetensors"))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One feature cache for the module: test-split features are encoded once (keys hash the weights)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def cache_env(shared_cache, monkeypatch):
    monkeypatch.setenv("CALPROMPT_CACHE", str(shared_cache))
    return {**os.environ, "CALPROMPT_CACHE": str(shared_cache), "HF_HUB_OFFLINE": "1"}
