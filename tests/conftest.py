"""Shared fixtures: small open_clip models built from configs (random init, no downloads)."""

from __future__ import annotations

import os

import open_clip
import pytest
import torch

from tests.tiny_models import make_tiny_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def few_run_bootstrap_resamples(monkeypatch):
    """Runs started in this process draw 50 bootstrap resamples per interval instead of 1,000: the intervals' code
    path (and their bytes in metrics.json) at a fraction of a tiny run's time. The bootstrap's own arithmetic is
    checked in tests/metrics with explicit counts; runs started as subprocesses keep the default."""
    monkeypatch.setattr("calprompt.calibration.suite.RUN_BOOTSTRAP_RESAMPLES", 50)


@pytest.fixture(scope="session")
def tiny_clip() -> open_clip.CLIP:
    return make_tiny_clip()


@pytest.fixture(scope="session")
def tiny_backbone(tiny_clip):
    from calprompt.clip import Preprocess, wrap_open_clip_model

    return wrap_open_clip_model(tiny_clip, name="tiny-test", preprocess=Preprocess(image_size=32))


@pytest.fixture(scope="session")
def vitb16_backbone():
    """ViT-B-16 architecture at random init (about 150M parameters; built once per session)."""
    from calprompt.clip import load_clip

    torch.manual_seed(0)
    return load_clip("ViT-B-16")


@pytest.fixture(scope="session")
def toy_backbone():
    """The shipped toy CLIP (tests that change its settings restore them)."""
    from calprompt.clip import load_clip

    return load_clip("toy")
