"""`transformers` CLIP checkpoints: a folder saved by the test loads offline, equals `transformers`' own features
and trains end to end through `calprompt train`."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from calprompt.clip import WeightsNotFoundError, load_clip
from calprompt.methods import build_method
from tests.clip.cli_runs import train_on_folder
from tests.clip.lever_checks import assert_levers_equal_plain_pass
from tests.tiny_models import save_tiny_transformers_clip

TEXTS = ["a photo of a dog.", "x x x x red circle.", "cat", "a centered satellite photo of 3 lakes, in 2024."]


@pytest.fixture(scope="module", params=["quick_gelu", "gelu"])
def saved(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"hf-clip-{request.param}")
    model = save_tiny_transformers_clip(folder, seed=3, hidden_act=request.param)
    return folder, model


def test_features_equal_transformers_own_encoders(saved):
    folder, hf_model = saved
    backbone = load_clip(f"transformers:{folder}")
    ids = backbone.tokenize(TEXTS)
    assert ids.shape == (4, 24) and int(ids[0, 0]) == hf_model.config.text_config.bos_token_id
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text_want = hf_model.get_text_features(input_ids=ids).pooler_output
        image_want = hf_model.get_image_features(pixel_values=images).pooler_output
        for truncate in (True, False):
            assert (backbone.encode_text(ids, truncate=truncate) - text_want).abs().max().item() <= 1e-5
        assert (backbone.encode_image(images) - image_want).abs().max().item() <= 1e-5
        assert backbone.logit_scale.item() == pytest.approx(hf_model.logit_scale.exp().item(), rel=1e-6)
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone.preprocess.image_size == 32 and backbone.context_length == 24


def test_prompt_levers_equal_the_plain_pass_on_a_converted_checkpoint(saved):
    """The converted model is open_clip's causal CLIP: shared prefix and length groups give the plain pass's
    features (1e-5) and context gradients (1e-5 relative)."""
    folder, _ = saved
    backbone = load_clip(f"transformers:{folder}")
    torch.manual_seed(0)
    assert_levers_equal_plain_pass(backbone, build_method("coop", backbone, ["red circle", "blue square", "cat"]))


def test_missing_tokenizer_names_the_path(tmp_path):
    save_tiny_transformers_clip(tmp_path, tokenizer=False)
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "vocab.json")) as error:
        load_clip(f"transformers:{tmp_path}")
    assert "\n" not in str(error.value)
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "nowhere" / "config.json")):
        load_clip(f"transformers:{tmp_path / 'nowhere'}/")


def test_trains_end_to_end_through_the_cli(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    save_tiny_transformers_clip(folder, seed=5)
    for method, calibration in (("coop", "ours"), ("kgcoop", "none"), ("maple", "none"), ("zeroshot", "none")):
        train_on_folder(f"transformers:{folder}", method, calibration, tmp_path, monkeypatch)
