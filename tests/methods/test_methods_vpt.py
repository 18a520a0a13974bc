"""VPT-deep: parameter count, the fixed zero-shot text side, and what zeroed visual prompts do (and do not) keep."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from calprompt.methods import build_method

NAMES = ["dog", "golden retriever", "sea or lake"]


def test_vitb16_parameter_count(vitb16_backbone):
    assert build_method("vpt", vitb16_backbone, NAMES).num_trainable_parameters() == 12 * 8 * 768 == 73_728


def _zeroed(backbone):
    method = build_method("vpt", backbone, NAMES)
    with torch.no_grad():
        for param in method.parameters():
            if param.requires_grad:
                param.zero_()
    return method


def test_text_side_is_zero_shot_and_never_encoded_per_step(tiny_backbone, monkeypatch):
    method = _zeroed(tiny_backbone)
    ids = tiny_backbone.tokenize([f"a photo of a {name}." for name in NAMES])
    expected = F.normalize(tiny_backbone.model.encode_text(ids), dim=-1)  # open_clip's own encoder
    assert (method.encode_text() - expected).abs().max().item() <= 1e-6

    def no_text_encoding(*args, **kwargs):
        raise AssertionError("the text encoder ran during a training step")

    monkeypatch.setattr(tiny_backbone, "encode_text_embeddings", no_text_encoding)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    output = method(images)
    output.logits.logsumexp(-1).sum().backward()
    # logits are exactly those of the prompted image features against zero-shot text
    image = F.normalize(method.encode_image(images), dim=-1)
    assert torch.allclose(output.logits, tiny_backbone.logit_scale * image @ expected.t(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("backbone_name", ["tiny_backbone", "vitb16_backbone"])
def test_zeroed_prompts_are_not_the_zero_shot_image_encoder(backbone_name, request):
    """Appended tokens, even zero, are attended to (ln_pre maps them to its bias): the features move."""
    backbone = request.getfixturevalue(backbone_name)
    method = _zeroed(backbone)
    size = backbone.preprocess.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prompted, frozen = method.encode_image(images), backbone.encode_image(images)
    assert prompted.shape == frozen.shape
    assert (prompted - frozen).abs().max().item() > 1e-3 * frozen.abs().max().item()


def test_options_are_checked(tiny_backbone):
    with pytest.raises(ValueError, match="depth"):
        build_method("vpt", tiny_backbone, NAMES, depth=tiny_backbone.vision_layers + 1)
    with pytest.raises(ValueError, match="text_template"):
        build_method("vpt", tiny_backbone, NAMES, text_template="a photo")
    assert not build_method("vpt", tiny_backbone, NAMES).image_encoder_untouched
