"""CoOp behind the method interface: exact zero-shot equivalence at init, class positions, switching class lists."""

from __future__ import annotations

import pytest
import torch

from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.methods import available_methods, build_method

NAMES = ["dog", "golden retriever", "Apply_Eye_Makeup", "sea or lake", "x"]


def _images(backbone, n=6, seed=0):
    size = backbone.preprocess.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone_name", ["tiny_backbone", "vitb16_backbone"])
def test_coop_init_equals_zero_shot_logits(backbone_name, request):
    backbone = request.getfixturevalue(backbone_name)
    method = build_method("coop", backbone, NAMES)
    images = _images(backbone, n=3)
    with torch.no_grad():
        logits = method(images).logits
        image_features = torch.nn.functional.normalize(backbone.model.encode_image(images), dim=-1)
        ids = backbone.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
        text = torch.nn.functional.normalize(backbone.model.encode_text(ids), dim=-1)  # open_clip's own encoder
        expected = backbone.model.logit_scale.exp() * image_features @ text.t()
    assert (logits - expected).abs().max().item() <= 1e-4


def test_coop_vitb16_parameter_count(vitb16_backbone):
    assert build_method("coop", vitb16_backbone, NAMES).num_trainable_parameters() == 2048


@pytest.mark.parametrize(("position", "sentence"), [("front", "{} a photo of a."), ("middle", "a photo {} of a.")])
def test_class_token_positions(tiny_backbone, position, sentence):
    """With context from "a photo of a", moving the class token gives exactly the re-ordered sentence."""
    method = build_method("coop", tiny_backbone, NAMES, class_token_position=position)
    with torch.no_grad():
        ours = method.encode_text()
        ids = tiny_backbone.tokenize([sentence.format(n.replace("_", " ")) for n in NAMES])
        expected = tiny_backbone.model.encode_text(ids)
    assert (ours - expected).abs().max().item() <= 1e-5


def test_switch_class_list_keeps_learned_context(tiny_backbone):
    method = build_method("coop", tiny_backbone, NAMES[:3])
    with torch.no_grad():
        method.ctx.add_(0.1)
    learned = method.ctx.detach().clone()
    method.set_classnames(NAMES[3:])
    assert torch.equal(method.ctx, learned)
    out = method(_images(tiny_backbone))
    assert out.logits.shape == (6, 2) and out.text_features.shape[0] == 2


def test_only_context_is_trainable_and_gets_gradients(tiny_backbone):
    method = build_method("coop", tiny_backbone, NAMES)
    assert list(method.trainable_parameters()) == ["ctx"]
    out = method(_images(tiny_backbone))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3, 4, 0])).backward()
    assert method.ctx.grad is not None and method.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_backbone.parameters())


def test_state_dict_round_trip(tiny_backbone):
    method = build_method("coop", tiny_backbone, NAMES)
    with torch.no_grad():
        method.ctx.normal_()
    state = method.trainable_state_dict()
    other = build_method("coop", tiny_backbone, NAMES)
    other.load_trainable_state_dict(state)
    images = _images(tiny_backbone)
    with torch.no_grad():
        assert torch.equal(method(images).logits, other(images).logits)
    with pytest.raises(ValueError, match="shape"):
        other.load_trainable_state_dict({"ctx": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="missing"):
        other.load_trainable_state_dict({})


def test_random_init_follows_the_run_seed(tiny_backbone):
    torch.manual_seed(5)
    a = build_method("coop", tiny_backbone, NAMES, ctx_init=None, n_ctx=16)
    torch.manual_seed(5)
    b = build_method("coop", tiny_backbone, NAMES, ctx_init=None, n_ctx=16)
    assert a.ctx.shape == (16, tiny_backbone.text_width)
    assert torch.equal(a.ctx, b.ctx)
    assert 0.01 < a.ctx.std().item() < 0.03  # N(0, 0.02)


def test_class_specific_context(tiny_backbone):
    method = build_method("coop", tiny_backbone, NAMES, class_specific_context=True)
    assert method.ctx.shape == (len(NAMES), 4, tiny_backbone.text_width)
    with pytest.raises(ValueError, match="class-specific"):
        method.set_classnames(["a", "b"])


def test_bad_options(tiny_backbone):
    with pytest.raises(ValueError, match="n_ctx"):
        build_method("coop", tiny_backbone, NAMES, n_ctx=3)  # "a photo of a" has 4 tokens
    with pytest.raises(ValueError, match="class_token_position"):
        build_method("coop", tiny_backbone, NAMES, class_token_position="left")
    with pytest.raises(ValueError, match=r"unknown_option|among"):
        build_method("coop", tiny_backbone, NAMES, unknown_option=1)
    with pytest.raises(ValueError, match="coop"):
        build_method("no-such-method", tiny_backbone, NAMES)


def test_zero_shot_method_equals_zero_shot_features(tiny_backbone):
    method = build_method("zeroshot", tiny_backbone, NAMES, template="a photo of a {}, a type of pet.")
    expected = zero_shot_text_features(tiny_backbone, NAMES, "a photo of a {}, a type of pet.")
    assert torch.allclose(method.encode_text(), expected)
    assert method.num_trainable_parameters() == 0
    assert {"coop", "zeroshot"} <= set(available_methods())
