"""Toy CLIP: config, preprocessing, compact checkpoint round trip and the missing-asset error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from calprompt.toy.model import (
    DEFAULT_CHECKPOINT,
    TOY_IMAGE_MEAN,
    TOY_IMAGE_STD,
    build_toy_clip,
    images_to_tensor,
    load_toy_clip_model,
    save_toy_checkpoint,
    sidecar_path,
)
from calprompt.toy.vocab import tokenizer, toy_token_ids


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_toy_clip().eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "toy_clip.safetensors"
    save_toy_checkpoint(model, path, {"recipe": "test", "steps": 0})
    return path


def test_architecture_matches_the_documented_config(model):
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(3.43e6, rel=0.01)
    assert model.token_embedding.weight.shape == (49408, 64)
    assert model.positional_embedding.shape == (32, 64)
    assert model.visual.positional_embedding.shape == (1 + 8 * 8, 64)  # class token + (32 / 4)^2 patches
    assert model.logit_scale.exp().item() == pytest.approx(50.0)


def test_logit_scale_init_is_in_log_space():
    assert build_toy_clip(init_logit_scale=math.log(20.0)).logit_scale.exp().item() == pytest.approx(20.0)


def test_images_to_tensor_matches_torchvision():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(TOY_IMAGE_MEAN, TOY_IMAGE_STD)])
    expected = torch.stack([reference(Image.fromarray(x)) for x in images])
    assert torch.allclose(images_to_tensor(images), expected, atol=1e-6)


def test_checkpoint_is_small_and_self_describing(saved):
    assert saved.stat().st_size + sidecar_path(saved).stat().st_size <= 10 * 2**20
    assert saved.stat().st_size < 2 * 2**20  # the full fp16 embedding alone would be 6.3 MB
    sidecar = json.loads(sidecar_path(saved).read_text())
    assert sidecar["config"]["embed_dim"] == 64 and sidecar["meta"] == {"recipe": "test", "steps": 0}


def test_round_trip_gives_the_same_encodings(model, saved):
    loaded, meta = load_toy_clip_model(saved)
    assert meta == {"recipe": "test", "steps": 0} and not loaded.training
    assert next(loaded.parameters()).dtype == torch.float32
    texts = ["a photo of a red star.", "an inverted image of a small dotted cyan ring.", "X X X X striped cross."]
    tokens = tokenizer()(texts)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(tokens), model.encode_text(tokens), atol=2e-2, rtol=2e-2)
        assert torch.allclose(loaded.encode_image(images), model.encode_image(images), atol=2e-2, rtol=2e-2)
        # fp16 rounding is the only difference: the same as casting the original weights
        half = build_toy_clip()
        half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
        half.eval()
        assert torch.allclose(loaded.encode_image(images), half.encode_image(images), atol=1e-5)


def test_only_usable_embedding_rows_are_kept(model, saved):
    loaded, _ = load_toy_clip_model(saved)
    weight = loaded.token_embedding.weight
    used = torch.zeros(len(weight), dtype=torch.bool)
    used[list(toy_token_ids())] = True
    assert torch.all(weight[~used] == 0)
    assert torch.equal(weight[used], model.token_embedding.weight[used].half().float())


def test_missing_default_asset_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setattr("calprompt.toy.model.DEFAULT_CHECKPOINT", tmp_path / "toy_clip.safetensors")
    with pytest.raises(FileNotFoundError, match="calprompt toy pretrain --out DIR"):
        load_toy_clip_model()
    with pytest.raises(FileNotFoundError, match=r"not found: .*elsewhere\.safetensors"):
        load_toy_clip_model(tmp_path / "elsewhere.safetensors")
    assert DEFAULT_CHECKPOINT.name == "toy_clip.safetensors" and DEFAULT_CHECKPOINT.parent.name == "assets"


def test_wrong_format_is_refused(saved, tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(saved.read_bytes())
    sidecar_path(other).write_text(json.dumps({"format": "something-else", "config": {}}))
    with pytest.raises(ValueError, match="something-else"):
        load_toy_clip_model(other)
