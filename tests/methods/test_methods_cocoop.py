"""CoCoOp: the meta-net's shift is the only difference from CoOp, and the batched B x C text pass is exact."""

from __future__ import annotations

import pytest
import torch

from calprompt.methods import build_method

NAMES = ["dog", "golden retriever", "sea or lake", "x", "Apply_Eye_Makeup"]


def _images(backbone, n=4, seed=0):
    size = backbone.preprocess.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone_name", ["tiny_backbone", "vitb16_backbone"])
def test_zeroed_meta_net_equals_coop_with_the_same_context(backbone_name, request):
    backbone = request.getfixturevalue(backbone_name)
    torch.manual_seed(0)
    cocoop = build_method("cocoop", backbone, NAMES, ctx_init=None)
    coop = build_method("coop", backbone, NAMES, ctx_init=None)
    with torch.no_grad():
        coop.ctx.copy_(cocoop.ctx)
        cocoop.meta_net[2].weight.zero_()
        cocoop.meta_net[2].bias.zero_()
        images = _images(backbone, n=3)
        difference = (cocoop(images).logits - coop(images).logits).abs().max().item()
    assert difference <= 1e-5


def test_batched_per_image_pass_equals_a_loop_over_images(tiny_backbone):
    torch.manual_seed(0)
    method = build_method("cocoop", tiny_backbone, NAMES, text_chunk_rows=7)  # chunks cut across images
    with torch.no_grad():
        for layer in (method.meta_net[0], method.meta_net[2]):
            layer.weight.normal_(0, 0.5)
        features = torch.nn.functional.normalize(torch.randn(6, tiny_backbone.embed_dim), dim=-1)
        batched = method.encode_text(features)  # (B, C, E)
        looped = torch.stack([method.encode_text(f[None])[0] for f in features])
    assert batched.shape == (6, len(NAMES), tiny_backbone.embed_dim)
    assert (batched - looped).abs().max().item() <= 1e-5
    assert not torch.allclose(batched[0], batched[1])  # the prompts do depend on the image


def test_cocoop_vitb16_parameter_count(vitb16_backbone):
    # ctx 4 x 512 + Linear(512 -> 32) + Linear(32 -> 512)
    assert build_method("cocoop", vitb16_backbone, NAMES).num_trainable_parameters() == 4 * 512 + (512 * 32 + 32) + (
        32 * 512 + 512
    )
    assert build_method("cocoop", vitb16_backbone, NAMES).num_trainable_parameters() == 35_360


def test_cocoop_needs_image_features(tiny_backbone):
    method = build_method("cocoop", tiny_backbone, NAMES)
    with pytest.raises(ValueError, match="image_features"):
        method.encode_text()
