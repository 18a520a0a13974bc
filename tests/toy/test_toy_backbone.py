"""The toy CLIP as a backbone: loadable by name/path, content-hashed identity, vocabulary warnings."""

from __future__ import annotations

import warnings

import pytest
import torch

from calprompt.clip import load_clip
from calprompt.toy.model import build_toy_clip, save_toy_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_toy_checkpoint(build_toy_clip(), tmp_path_factory.mktemp("toy") / "toy.safetensors")


def test_loads_as_a_frozen_backbone_with_its_preprocessing(checkpoint):
    backbone = load_clip("toy", str(checkpoint))
    assert backbone.preprocess.image_size == 32 and backbone.context_length == 32
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone.identity.startswith("toy|") and len(backbone.identity) == len("toy|") + 16
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert backbone.encode_image(images).shape == (2, 64)


def test_words_outside_the_toy_vocabulary_are_named_in_a_warning(checkpoint):
    backbone = load_clip("toy", str(checkpoint))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone.tokenize(["a photo of a red circle.", "an inverted image of a striped blue star."])
    with pytest.warns(UserWarning, match="platypus"):
        backbone.tokenize(["a photo of a platypus."])


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.safetensors"):
        load_clip("toy", str(tmp_path / "nothing.safetensors"))
