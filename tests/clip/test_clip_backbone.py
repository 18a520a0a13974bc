"""The backbone layer reproduces open_clip exactly without prompts, and prompts enter where the methods expect."""

from __future__ import annotations

import pytest
import torch

CLASSNAMES = ["dog", "golden retriever", "airplane", "Apply Eye Makeup", "exterior balcony", "x", "sea or lake"]


def _prompts(names: list[str]) -> list[str]:
    return [f"a photo of a {name}." for name in names] + ["a centered satellite photo of herbaceous vegetation land."]


@pytest.mark.parametrize("backbone_name", ["tiny_backbone", "vitb16_backbone"])
def test_text_features_equal_open_clip(backbone_name, request):
    backbone = request.getfixturevalue(backbone_name)
    ids = backbone.tokenize(_prompts(CLASSNAMES))
    with torch.no_grad():
        expected = backbone.model.encode_text(ids)
        for truncate in (True, False):
            ours = backbone.encode_text(ids, truncate=truncate)
            assert ours.shape == expected.shape
            assert (ours - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backbone_name", ["tiny_backbone", "vitb16_backbone", "toy_backbone"])
def test_image_features_equal_open_clip(backbone_name, request):
    """Our image path (direct attention, the last block at the class token only) against open_clip's own."""
    backbone = request.getfixturevalue(backbone_name)
    size = backbone.preprocess.image_size
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = backbone.model.encode_image(images)
        ours = backbone.encode_image(images)
    assert (ours - expected).abs().max().item() <= 1e-5


def test_average_pooled_towers_keep_open_clips_pooling(tiny_backbone):
    """A ViT that averages its patch tokens needs the last block at every position: no class-token shortcut."""
    visual = tiny_backbone.model.visual
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    try:
        visual.pool_type = "avg"
        with torch.no_grad():
            expected = tiny_backbone.model.encode_image(images)
            ours = tiny_backbone.encode_image(images)
    finally:
        visual.pool_type = "tok"
    assert (ours - expected).abs().max().item() <= 1e-5


def _manual_prompted_image(backbone, images, prompts, deep):
    """Visual prompts through open_clip's own blocks at every position (the reference for our image path)."""
    visual = backbone.model.visual
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    tokens = x.shape[1]
    x = visual.ln_pre(torch.cat([x, prompts.expand(x.shape[0], -1, -1)], dim=1))
    for index, block in enumerate(visual.transformer.resblocks):
        if index < len(deep) and deep[index] is not None:
            x = torch.cat([x[:, :tokens], deep[index].expand(x.shape[0], -1, -1)], dim=1)
        x = block(x)
    return visual.ln_post(x[:, 0]) @ visual.proj


@pytest.mark.parametrize("backbone_name", ["tiny_backbone", "vitb16_backbone"])
def test_visual_prompt_features_and_gradients_equal_open_clip_blocks(backbone_name, request):
    """VPT / MaPLe / IVLP prompts: features to 1e-5 and prompt gradients to 1e-5 relative (float32 sums of the same
    terms in another order) against open_clip's blocks run at every position."""
    backbone = request.getfixturevalue(backbone_name)
    size, width, layers = backbone.preprocess.image_size, backbone.vision_width, backbone.vision_layers
    generator = torch.Generator().manual_seed(7)
    images = torch.randn(2, 3, size, size, generator=generator)
    weights = torch.randn(2, backbone.embed_dim, generator=generator)
    shallow = torch.randn(2, width, generator=generator) * 0.1
    deep = [None] + [torch.randn(2, width, generator=generator) * 0.1 for _ in range(layers - 1)]
    results = []
    for encode in (
        lambda p, d: backbone.encode_image(images, prompts=p, deep_prompts=d),
        lambda p, d: _manual_prompted_image(backbone, images, p, d),
    ):
        leaves = [shallow.clone().requires_grad_(True)] + [t.clone().requires_grad_(True) for t in deep[1:]]
        features = encode(leaves[0], [None, *leaves[1:]])
        grads = torch.autograd.grad((features * weights).sum(), leaves)
        results.append((features.detach(), torch.cat([g.flatten() for g in grads])))
    (ours, our_grads), (expected, expected_grads) = results
    assert (ours - expected).abs().max().item() <= 1e-5
    assert (our_grads - expected_grads).norm().item() <= 1e-5 * expected_grads.norm().item()


def test_truncation_is_exact_with_deep_prompts(tiny_backbone):
    backbone = tiny_backbone
    ids = backbone.tokenize(["X X X X dog.", "X X X X a very long class name with many words in it.", "X X X X x."])
    generator = torch.Generator().manual_seed(2)
    embeddings = backbone.embed_tokens(ids)
    embeddings = embeddings.clone()
    embeddings[:, 1:5] = torch.randn(4, backbone.text_width, generator=generator)  # learnable context at 1..4
    deep = [None] + [torch.randn(4, backbone.text_width, generator=generator) for _ in range(backbone.text_layers - 1)]
    with torch.no_grad():
        full = backbone.encode_text_embeddings(embeddings, ids, deep_prompts=deep, truncate=False)
        short = backbone.encode_text_embeddings(embeddings, ids, deep_prompts=deep, truncate=True)
        without_deep = backbone.encode_text_embeddings(embeddings, ids, truncate=True)
    assert (full - short).abs().max().item() <= 1e-5
    assert (full - without_deep).abs().max().item() > 1e-3  # the deep prompts really act


def test_deep_prompts_equal_manual_replacement(tiny_backbone):
    """Replacing positions at a layer's input equals running the blocks by hand with that replacement."""
    backbone = tiny_backbone
    ids = backbone.tokenize(["X X dog."])
    embeddings = backbone.embed_tokens(ids)
    prompt = torch.randn(2, backbone.text_width, generator=torch.Generator().manual_seed(3))
    model = backbone.model
    with torch.no_grad():
        ours = backbone.encode_text_embeddings(embeddings, ids, deep_prompts=[None, prompt], truncate=False)
        x = embeddings + model.positional_embedding
        for index, block in enumerate(model.transformer.resblocks):
            if index == 1:
                x[:, 1:3] = prompt
            x = block(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)[0, ids[0].argmax()]
        manual = x @ model.text_projection
    assert (ours[0] - manual).abs().max().item() <= 1e-5


def test_visual_prompts_change_output_and_get_gradients(tiny_backbone):
    backbone = tiny_backbone
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    prompts = torch.zeros(3, backbone.vision_width, requires_grad=True)
    deep = [None, torch.randn(3, backbone.vision_width, requires_grad=True)]
    plain = backbone.encode_image(images)
    prompted = backbone.encode_image(images, prompts=prompts)
    deep_prompted = backbone.encode_image(images, prompts=prompts, deep_prompts=deep)
    assert (plain - prompted).abs().max().item() > 1e-4
    assert (prompted - deep_prompted).abs().max().item() > 1e-4
    deep_prompted.sum().backward()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    assert deep[1].grad is not None and deep[1].grad.abs().sum() > 0


def test_visual_prompts_match_manual_forward(tiny_backbone):
    """Appended tokens go after the positional embedding and before ln_pre, and never into the pooled token."""
    backbone = tiny_backbone
    visual = backbone.model.visual
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    prompts = torch.randn(2, backbone.vision_width, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ours = backbone.encode_image(images, prompts=prompts)
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.view(1, 1, -1), x], dim=1) + visual.positional_embedding
        x = torch.cat([x, prompts.unsqueeze(0)], dim=1)
        x = visual.ln_pre(x)
        for block in visual.transformer.resblocks:
            x = block(x)
        manual = visual.ln_post(x[:, 0]) @ visual.proj
    assert (ours - manual).abs().max().item() <= 1e-5


def test_backbone_is_frozen_and_stays_in_eval(tiny_backbone):
    backbone = tiny_backbone
    assert not any(parameter.requires_grad for parameter in backbone.parameters())
    wrapper = torch.nn.ModuleDict({"backbone": backbone})
    wrapper.train()
    assert not backbone.training and not backbone.model.training


def test_text_gradients_reach_context(tiny_backbone):
    backbone = tiny_backbone
    ids = backbone.tokenize(["X X X X dog.", "X X X X cat."])
    context = torch.zeros(4, backbone.text_width, requires_grad=True)
    embeddings = backbone.embed_tokens(ids)
    embeddings = torch.cat([embeddings[:, :1], context.expand(2, -1, -1), embeddings[:, 5:]], dim=1)
    backbone.encode_text_embeddings(embeddings, ids).sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0


def test_bad_shapes_raise(tiny_backbone):
    ids = tiny_backbone.tokenize(["dog."])
    with pytest.raises(ValueError, match="Expected `embeddings/token_ids`"):
        tiny_backbone.encode_text_embeddings(torch.zeros(1, 5, tiny_backbone.text_width), ids)
    with pytest.raises(ValueError, match="deep_prompts"):
        tiny_backbone.encode_text_embeddings(
            tiny_backbone.embed_tokens(ids), ids, deep_prompts=[None, torch.zeros(8, tiny_backbone.text_width)]
        )
    with pytest.raises(ValueError, match="prompts"):
        tiny_backbone.encode_image(torch.zeros(1, 3, 32, 32), deep_prompts=[torch.zeros(2, tiny_backbone.vision_width)])
