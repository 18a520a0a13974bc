"""SigLIP's own tokenizers (SentencePiece, T5-style; Gemma for SigLIP 2): no start token, end token and padding
after the text, the feature read at the last position. A tiny SentencePiece model trained in the test is wired as
open_clip wires SigLIP's (``hf_tokenizer_name`` in the config, open_clip's ``HFTokenizer`` on the folder); the
``sentencepiece`` processor itself is the oracle for the ids."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.tokenizer import HFTokenizer, canonicalize_text

from calprompt.calibration import build_objective, text_moments
from calprompt.clip import load_clip
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.methods import build_method
from tests.tiny_models import save_open_clip_dir, save_tiny_sentencepiece_tokenizer, siglip_sentencepiece_cfg

TEXTS = ["a photo of a dog.", "Red circle!", "cat"]
CLASSES = ["red circle", "blue square", "golden retriever"]
EOS, PAD = 1, 0


@pytest.fixture(scope="module")
def siglip_sp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("siglip-sp") / "model"
    processor = save_tiny_sentencepiece_tokenizer(folder)
    model = save_open_clip_dir(folder, siglip_sentencepiece_cfg(processor.get_piece_size(), context_length=32), seed=3)
    return folder, model, processor, load_clip(f"local-dir:{folder}")


def test_ids_are_sentencepieces_then_end_token_then_padding(siglip_sp):
    folder, _, processor, backbone = siglip_sp
    reference = open_clip.get_tokenizer(f"local-dir:{folder}")
    assert isinstance(reference, HFTokenizer)  # open_clip's own path for SigLIP configs
    ids = backbone.tokenize(TEXTS)
    torch.testing.assert_close(ids.cpu(), reference(TEXTS), rtol=0, atol=0)
    for row, text in zip(ids.tolist(), TEXTS, strict=True):
        pieces = processor.encode(canonicalize_text(text))
        assert row == [*pieces, EOS] + [PAD] * (backbone.context_length - len(pieces) - 1)
    assert backbone.text_start == 0 and backbone.family.text_pool == "last"


def test_text_features_equal_open_clips_encode_text(siglip_sp):
    folder, model, _, backbone = siglip_sp
    ids = open_clip.get_tokenizer(f"local-dir:{folder}")(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.encode_text(backbone.tokenize(TEXTS)), model.encode_text(ids), rtol=0, atol=1e-5
        )


def _plain_pass(model, rows: list[torch.Tensor]) -> torch.Tensor:
    """open_clip's text modules on hand-built (L, D) token embeddings, read at the last position."""
    x = torch.stack(rows) + model.text.positional_embedding  # (C, L, D)
    x = model.text.ln_final(model.text.transformer(x))
    return F.normalize(model.text.text_projection(x[:, -1]), dim=-1)


@pytest.mark.parametrize("position", ["end", "front"])
def test_context_comes_first_then_the_class_then_the_tokenizers_tokens(siglip_sp, position):
    _, model, processor, backbone = siglip_sp
    torch.manual_seed(0)
    method = build_method("coop", backbone, CLASSES, n_ctx=3, ctx_init=None, class_token_position=position)
    with torch.no_grad():
        ours = method(image_features=torch.randn(2, backbone.embed_dim)).text_features
        embed = model.text.token_embedding
        rows = []
        for name in CLASSES:
            name_tokens = embed(torch.tensor(processor.encode(name)))
            tail = embed(torch.tensor([EOS] + [PAD] * (backbone.context_length - 3 - len(name_tokens) - 1)))
            parts = [method.ctx, name_tokens] if position == "end" else [name_tokens, method.ctx]
            rows.append(torch.cat([*parts, tail]))
        oracle = _plain_pass(model, rows)
    torch.testing.assert_close(ours, oracle, rtol=0, atol=1e-5)


def test_context_initialised_from_a_phrase_is_its_pieces(siglip_sp):
    _, model, processor, backbone = siglip_sp
    method = build_method(
        "coop", backbone, CLASSES, n_ctx=len(processor.encode("a photo of a")), ctx_init="a photo of a"
    )
    with torch.no_grad():
        expected = model.text.token_embedding(torch.tensor(processor.encode("a photo of a")))
    torch.testing.assert_close(method.ctx.detach(), expected, rtol=0, atol=0)


def test_coop_with_ours_trains_one_step(siglip_sp):
    """CoOp + ours (cross-entropy, margin mean-variance, text moment matching against the zero-shot features): the
    loss reaches the context, and one SGD step changes the context and the loss."""
    _, _, _, backbone = siglip_sp
    torch.manual_seed(0)
    method = build_method("coop", backbone, CLASSES)  # ctx_init "a photo of a": 4 pieces
    moments = text_moments(zero_shot_text_features(backbone, CLASSES, "a photo of a {}."))
    images = F.normalize(torch.randn(6, backbone.embed_dim), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    objective = build_objective("ours")
    optimizer = torch.optim.SGD([method.ctx], lr=0.5)

    def loss() -> torch.Tensor:
        output = method(image_features=images)
        return objective(
            logits=output.logits, labels=labels, text_features=output.text_features, zs_text_moments=moments
        )[0]

    before, start = loss(), method.ctx.detach().clone()
    before.backward()
    assert torch.isfinite(method.ctx.grad).all() and method.ctx.grad.abs().sum() > 0
    optimizer.step()
    assert (method.ctx.detach() - start).abs().max() > 0
    with torch.no_grad():
        assert loss().item() != before.item()
