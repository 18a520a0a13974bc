"""BERT-text CLIPs (open_clip CustomTextCLIP with a Hugging Face BERT text encoder), on a small random-init model
with a vocabulary the test writes: features equal open_clip's encoders, prompts go after [CLS], truncation is exact
with padding masked, deep text prompts are refused, and the text methods train end to end."""

from __future__ import annotations

import shutil

import pytest
import torch

pytest.importorskip("transformers")

from calprompt.clip import load_clip
from calprompt.methods import build_method
from tests.clip.cli_runs import train_on_folder
from tests.clip.lever_checks import prompted_pass
from tests.tiny_models import bert_text_cfg, save_open_clip_dir, save_tiny_bert_text

TEXTS = ["a photo of a dog.", "x x x x red circle.", "cat"]
CLASSES = ["red circle", "blue square", "cat"]


def _save(root, pooler: str):
    save_tiny_bert_text(root / "bert")
    model = save_open_clip_dir(root / "model", bert_text_cfg(root / "bert", pooler), seed=4)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # a local-dir: folder holds its tokenizer (open_clip)
        shutil.copy(root / "bert" / name, root / "model" / name)
    return root / "model", model


@pytest.fixture(scope="module", params=["mean_pooler", "cls_pooler"])
def bert(request, tmp_path_factory):
    folder, model = _save(tmp_path_factory.mktemp(f"bert-{request.param}"), request.param)
    return folder, model, load_clip(f"local-dir:{folder}")


def test_features_equal_open_clips_encoders(bert):
    _, model, backbone = bert
    assert backbone.family.name == "bert-text" and not backbone.family.causal_text
    ids = backbone.tokenize(TEXTS)
    assert ids.shape == (3, 24) and set(ids[:, 0].tolist()) == {2}  # [CLS] first, from the written vocabulary
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.encode_text(ids)
        for truncate in (True, False):
            assert (backbone.encode_text(ids, truncate=truncate) - want).abs().max() <= 1e-5
        assert (backbone.encode_image(images) - model.encode_image(images)).abs().max() <= 1e-5


def test_context_follows_cls_and_truncation_with_masked_padding_is_exact(bert):
    """CoOp's prompts are [CLS] ctx name . [SEP]; cut after the last [SEP] or run over the whole context: the same
    features (1e-5) and context gradients (1e-5 relative), and they equal open_clip's tower on the same embeddings."""
    _, model, backbone = bert
    torch.manual_seed(0)
    method = build_method("coop", backbone, CLASSES)
    ids = method.prompts.ids
    assert set(ids[:, 0].tolist()) == {2} and ids.shape[1] < backbone.context_length  # [CLS], then cut
    cut = prompted_pass(backbone, method, False, False)
    full_ids = backbone.tokenize([f"x x x x {name}." for name in CLASSES])
    full = torch.cat([method.prompts.assemble(method.ctx), backbone.embed_tokens(full_ids)[:, ids.shape[1] :]], 1)
    with torch.no_grad():
        text = model.text
        mask = (full_ids != 0).long()
        oracle = text.proj(text.pooler(text.transformer(inputs_embeds=full, attention_mask=mask), mask))
        ours = backbone.encode_text_embeddings(full, full_ids, truncate=False, normalize=True)
    torch.testing.assert_close(ours, torch.nn.functional.normalize(oracle, dim=-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(cut[0], ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["maple", "ivlp"])
def test_deep_text_prompts_are_refused_naming_method_and_family(bert, method):
    _, _, backbone = bert
    with pytest.raises(ValueError, match=f"Method '{method}'") as error:
        build_method(method, backbone, CLASSES)
    message = str(error.value)
    assert "\n" not in message and "family 'bert-text'" in message and "deep text prompts" in message


def test_trains_end_to_end_through_the_cli(tmp_path, monkeypatch):
    folder, _ = _save(tmp_path, "mean_pooler")
    for method, calibration in (("coop", "ours"), ("kgcoop", "none"), ("vpt", "none"), ("zeroshot", "none")):
        train_on_folder(f"local-dir:{folder}", method, calibration, tmp_path, monkeypatch)
