"""Backbone families: what the facade hosts, and one-line refusals naming the family (and the method) otherwise."""

from __future__ import annotations

import open_clip
import pytest
import torch

from calprompt.clip import Preprocess, load_clip, wrap_open_clip_model
from calprompt.clip.loading import check_backbone_name
from calprompt.clip.missing import WeightsNotFoundError
from calprompt.methods import build_method

# A tiny CLIP with a ModifiedResNet image tower (open_clip's RN50 layout, one bottleneck per stage).
TINY_RESNET_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def resnet_backbone():
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_RESNET_CFG).eval()
    return wrap_open_clip_model(model, name="tiny-rn", preprocess=Preprocess(image_size=32))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["coca_ViT-B-32", "coca_roberta-ViT-B-32"])
def test_coca_is_refused_by_name_before_anything_is_built(name):
    for load in (load_clip, check_backbone_name):
        with pytest.raises(ValueError, match="backbone family") as error:
            load(name)
        message = _one_line(error)
        assert name in message and "CoCa" in message and "SigLIP" in message  # what it is, and what is supported


def test_other_hugging_face_text_encoders_are_refused_naming_them():
    """BERT text towers are hosted (test_clip_bert_text); RoBERTa's positions from inputs_embeds are not checked."""
    with pytest.raises(ValueError, match="hosted: BERT") as error:
        check_backbone_name("roberta-ViT-B-32")
    assert "roberta-ViT-B-32" in _one_line(error) and "roberta-base" in str(error.value)


@pytest.mark.parametrize("name", ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2"])
def test_siglip_checkpoints_load_their_tokenizer_before_building(name, monkeypatch):
    """SigLIP's SentencePiece/Gemma tokenizers are named in open_clip's configs and read before the weights: offline
    and uncached, the tokenizer's absence is the one-line error, and no model is built (test_clip_siglip_tokenizer
    runs such a tokenizer)."""
    assert check_backbone_name(name) == name
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("built before the tokenizer"))
    with pytest.raises(WeightsNotFoundError, match="tokenizer") as error:
        load_clip(name)
    assert name in _one_line(error) and f"timm/{name}" in str(error.value)


@pytest.mark.parametrize("method", ["vpt", "maple", "ivlp"])
def test_visual_prompts_on_a_convolutional_tower_name_the_method_and_the_family(resnet_backbone, method):
    assert resnet_backbone.family.name == "clip-resnet" and not resnet_backbone.family.visual_prompts
    with pytest.raises(ValueError, match=f"Method '{method}'") as error:
        build_method(method, resnet_backbone, ["dog", "cat"])
    message = _one_line(error)
    assert "clip-resnet" in message and "ModifiedResNet" in message and "visual prompt tokens" in message


def test_text_methods_run_on_a_convolutional_tower(resnet_backbone):
    """CoOp needs only the text tower: it builds and gives logits on the ResNet family."""
    method = build_method("coop", resnet_backbone, ["dog", "cat"])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = resnet_backbone.encode_image(images)
        torch.testing.assert_close(features, resnet_backbone.model.encode_image(images), rtol=0, atol=0)
        assert method(image_features=features).logits.shape == (2, 2)


class _RecordingHub:
    """Stands in for the hub download open_clip calls (``open_clip.pretrained.hf_hub_download``): serves the files
    of one fake repository from a folder and records which were asked for, in order."""

    def __init__(self, folder):
        self.folder, self.asked = folder, []

    def __call__(self, repo_id: str, filename: str, **kwargs):
        self.asked.append(filename)
        path = self.folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"{repo_id} has no {filename}")
        return str(path)


@pytest.mark.parametrize("refused", ["coca_ViT-B-32", "roberta-ViT-B-32"])
def test_a_hub_model_of_a_refused_family_is_refused_from_its_config_alone(refused, tmp_path, monkeypatch):
    import json

    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    (tmp_path / HF_CONFIG_NAME).write_text(json.dumps({"model_cfg": open_clip.get_model_config(refused)}))
    (tmp_path / HF_WEIGHTS_NAME).write_bytes(b"never read")  # would be downloaded if the config were not read first
    hub = _RecordingHub(tmp_path)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hub)
    with pytest.raises(ValueError, match="backbone family") as error:
        load_clip("hf-hub:someone/refused-model")
    assert "hf-hub:someone/refused-model" in _one_line(error)
    assert hub.asked == [HF_CONFIG_NAME]
    # The same fake hub with a hosted family's config: its weights are asked for after the config.
    from safetensors.torch import save_file

    from tests.tiny_models import TINY_CLIP_CFG, make_tiny_clip

    model = make_tiny_clip(seed=4)
    (tmp_path / HF_CONFIG_NAME).write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / HF_SAFE_WEIGHTS_NAME)
    hub.asked.clear()
    backbone = load_clip("hf-hub:someone/hosted-model")
    assert hub.asked[0] == HF_CONFIG_NAME and HF_SAFE_WEIGHTS_NAME in hub.asked
    torch.testing.assert_close(backbone.model.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_a_local_text_encoder_is_judged_by_its_config_not_its_folder_name(tmp_path):
    import json

    from calprompt.clip.families import refuse_unsupported_config

    for model_type in ("bert", "roberta"):
        folder = tmp_path / f"encoder-{len(model_type)}"  # no family in the folder name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        cfg = {"text_cfg": {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder)}}
        if model_type == "bert":
            refuse_unsupported_config("local-dir:/models/x", cfg)
        else:
            with pytest.raises(ValueError, match="hosted: BERT"):
                refuse_unsupported_config("local-dir:/models/x", cfg)
