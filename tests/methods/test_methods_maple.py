"""MaPLe: parameter count, the zero-shot sentence at the text input, and the text -> vision coupling."""

from __future__ import annotations

import torch

from calprompt.methods import build_method

NAMES = ["dog", "golden retriever", "Apply_Eye_Makeup"]


def test_vitb16_parameter_count(vitb16_backbone):
    method = build_method("maple", vitb16_backbone, NAMES)  # 2 tokens, depth 9
    linear = 512 * 768 + 768
    assert method.num_trainable_parameters() == 2 * 512 + linear + 8 * (2 * 512 + linear) == 3_555_072
    first = method.deep_proj[0]
    assert all(torch.equal(p.weight, first.weight) and torch.equal(p.bias, first.bias) for p in method.deep_proj)
    assert not torch.equal(method.proj.weight, first.weight)  # layer 0 has its own freshly initialised projection
    assert len({p.weight.data_ptr() for p in method.deep_proj}) == 8  # copies, not one shared layer


def test_layer0_text_input_is_the_zero_shot_sentence(vitb16_backbone):
    """ "a photo" is learned and "of a" fixed: the text encoder's input is exactly that of "a photo of a {c}."."""
    method = build_method("maple", vitb16_backbone, NAMES)
    embeddings = method.text.layer0_embeddings()
    ids = vitb16_backbone.tokenize([f"a photo of a {name.replace('_', ' ')}." for name in NAMES])
    expected = vitb16_backbone.embed_tokens(ids)[:, : embeddings.shape[1]].float()
    assert torch.equal(embeddings, expected)
    assert torch.equal(vitb16_backbone.eot_positions(method.text.tokens.ids), vitb16_backbone.eot_positions(ids))


def test_depth_one_text_is_zero_shot_clip(tiny_backbone):
    method = build_method("maple", tiny_backbone, NAMES, depth=1)
    ids = tiny_backbone.tokenize([f"a photo of a {name.replace('_', ' ')}." for name in NAMES])
    with torch.no_grad():
        assert (method.encode_text() - tiny_backbone.model.encode_text(ids)).abs().max().item() <= 1e-5


def test_the_image_branch_trains_the_text_prompts(tiny_backbone):
    """Coupling: visual prompts are projections of the text prompts, so image features alone reach them."""
    method = build_method("maple", tiny_backbone, NAMES, depth=2)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    method.encode_image(images).sum().backward()  # the image branch alone
    assert method.text.ctx.grad.abs().sum() > 0 and method.text.deep[0].grad.abs().sum() > 0
