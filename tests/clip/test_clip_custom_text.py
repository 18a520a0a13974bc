"""SigLIP-style and EVA-CLIP-style backbones (open_clip CustomTextCLIP with timm image towers), on small random-init
models saved as `local-dir:` folders: features equal open_clip's encoders, levers are used only where exact, and the
text methods train end to end (visual prompts in their timm towers: test_clip_timm_prompts)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import calprompt.clip.text_plan as text_plan
from calprompt.clip import load_clip
from calprompt.methods import build_method
from tests.clip.cli_runs import train_on_folder
from tests.clip.lever_checks import assert_levers_equal_plain_pass, prompted_pass
from tests.tiny_models import eva_style_cfg, save_open_clip_dir, siglip_style_cfg

TEXTS = ["a photo of a dog.", "x x x x red circle.", "cat"]
CLASSES = ["red circle", "blue square", "cat"]


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("siglip") / "model"
    model = save_open_clip_dir(folder, siglip_style_cfg(), seed=1)
    return folder, model, load_clip(f"local-dir:{folder}")


@pytest.fixture(scope="module")
def eva(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eva") / "model"
    model = save_open_clip_dir(folder, eva_style_cfg(), seed=2)
    return folder, model, load_clip(f"local-dir:{folder}")


@pytest.mark.parametrize("kind", ["siglip", "eva"])
def test_features_equal_open_clips_encoders(kind, request):
    _, model, backbone = request.getfixturevalue(kind)
    assert backbone.family.name == kind
    ids = backbone.tokenize(TEXTS)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for truncate in (True, False):
            assert (backbone.encode_text(ids, truncate=truncate) - model.encode_text(ids)).abs().max() <= 1e-5
        assert (backbone.encode_image(images) - model.encode_image(images)).abs().max() <= 1e-5


def test_sigmoid_models_class_probabilities_are_the_softmax_of_scaled_cosines(siglip):
    """open_clip's logits carry the bias (scale * cos + bias); over a class list it cancels in the softmax, so the
    zero-shot method's probabilities equal open_clip's logits' softmax."""
    _, model, backbone = siglip
    assert model.logit_bias is not None and model.logit_bias.item() == -10
    method = build_method("zeroshot", backbone, CLASSES, template="a photo of a {}.")
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        image, text, scale, bias = model(images, backbone.tokenize([f"a photo of a {c}." for c in CLASSES]))
        oracle = (scale * image @ text.T + bias).softmax(-1)
        ours = method(images).logits.softmax(-1)
    torch.testing.assert_close(ours, oracle, rtol=0, atol=1e-6)


def test_bidirectional_tower_gets_no_shared_prefix_and_no_truncation(siglip, monkeypatch):
    """A bidirectional tower's prefix states depend on the class name after them, and its feature reads every
    position: the shared prefix and length groups are never used (even when forced) and the full context runs."""
    _, model, backbone = siglip
    torch.manual_seed(0)
    method = build_method("coop", backbone, CLASSES)
    prompts = method.prompts.assemble(method.ctx)  # (C, L, D), marked as sharing [SOS] + context
    assert prompts.shape[1] == backbone.context_length  # never truncated
    block = model.text.transformer.resblocks[0]
    with torch.no_grad():  # why: the "shared" positions differ between classes after one block
        states = block(prompts + model.text.positional_embedding)
        assert (states[0, :5] - states[1, :5]).abs().max() > 1e-3
    calls = {"prefix": 0, "lengths": []}
    monkeypatch.setattr(text_plan, "block_after_prefix", lambda *a: calls.__setitem__("prefix", 1))
    original = text_plan.TextPlanner.encode_truncated

    def spy(self, embeddings, eot, length, *rest):
        calls["lengths"].append(length)
        return original(self, embeddings, eot, length, *rest)

    monkeypatch.setattr(text_plan.TextPlanner, "encode_truncated", spy)
    plain = prompted_pass(backbone, method, False, False)
    forced = prompted_pass(backbone, method, True, True)
    assert calls["prefix"] == 0 and set(calls["lengths"]) == {backbone.context_length}
    assert len(calls["lengths"]) == 2  # one group per pass
    torch.testing.assert_close(forced[0], plain[0], rtol=0, atol=0)
    with torch.no_grad():  # and the plain pass is open_clip's encoder on the same embeddings
        x = model.text.transformer(prompts + model.text.positional_embedding)
        oracle = F.normalize(model.text.text_projection(model.text.ln_final(x)[:, -1]), dim=-1)
    torch.testing.assert_close(plain[0], oracle, rtol=0, atol=1e-5)


def test_chunked_recompute_equals_the_whole_pass_on_a_bidirectional_tower(siglip):
    """Rows are independent sequences in any tower: chunks recomputed in backward give the same gradients."""
    _, _, backbone = siglip
    torch.manual_seed(0)
    method = build_method("coop", backbone, CLASSES)
    whole = prompted_pass(backbone, method, False, False)
    with backbone.text_memory_budget(1e-3):  # one row per chunk
        chunked = prompted_pass(backbone, method, False, False)
    torch.testing.assert_close(chunked[0], whole[0], rtol=0, atol=1e-5)
    assert ((chunked[1] - whole[1]).norm() / whole[1].norm()).item() <= 1e-5


def test_causal_eva_text_tower_keeps_every_lever(eva):
    _, _, backbone = eva
    assert backbone.family.causal_text
    torch.manual_seed(0)
    assert_levers_equal_plain_pass(backbone, build_method("coop", backbone, ["dog", "golden retriever", "sea or lake"]))


@pytest.mark.parametrize(
    ("kind", "method", "calibration"),
    [("siglip", "coop", "ours"), ("siglip", "kgcoop", "none"), ("siglip", "zeroshot", "none"), ("eva", "coop", "ours")],
)
def test_trains_end_to_end_through_the_cli(kind, method, calibration, request, tmp_path, monkeypatch):
    folder, _, _ = request.getfixturevalue(kind)
    train_on_folder(f"local-dir:{folder}", method, calibration, tmp_path, monkeypatch)
