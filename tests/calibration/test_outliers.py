"""DOR: the outlier regularizer against its formula, the noun list rebuilt byte for byte from WordNet, the exclusion
of class names, the ranking against a plain reimplementation and the seeded per-step sampler."""

from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from calprompt.calibration import build_objective
from calprompt.calibration.nouns import DEFAULT_WORDNET_DIR, LICENSE_FILE, NOUNS_FILE, build_noun_files, wordnet_nouns
from calprompt.calibration.outliers import (
    OutlierSampler,
    candidate_names,
    dor_loss,
    rank_by_base_similarity,
    select_outliers,
)
from calprompt.clip.zeroshot import zero_shot_text_features


def test_dor_loss_is_one_minus_the_mean_cosine():
    g = torch.Generator().manual_seed(0)
    tuned, frozen = torch.randn(7, 12, generator=g, dtype=torch.float64), torch.randn(7, 12, generator=g)
    a, b = tuned.numpy(), frozen.double().numpy()
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert float(dor_loss(tuned, frozen)) == pytest.approx(1 - cosine.mean(), abs=1e-12)
    assert float(dor_loss(frozen, 3 * frozen)) == pytest.approx(0.0, abs=1e-6)
    tuned.requires_grad_(True)
    dor_loss(tuned, frozen).backward()
    assert torch.isfinite(tuned.grad).all() and tuned.grad.abs().sum() > 0


def test_dor_loss_refuses_mismatched_features():
    with pytest.raises(ValueError, match="frozen_outlier_text"):
        dor_loss(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="tuned_outlier_text"):
        dor_loss(torch.randn(8), torch.randn(8))


def test_dor_preset_weight_defaults_to_coop_and_can_be_lowered():
    assert dict(build_objective("dor").terms[0][0].params) == {}
    assert build_objective("dor").terms[0][1] == 8.0
    assert build_objective("dor", weight=2.0).terms[0][1] == 2.0


@pytest.mark.skipif(not (DEFAULT_WORDNET_DIR / "index.noun").is_file(), reason="WordNet (wordnet-base) not installed")
def test_the_shipped_noun_list_is_rebuilt_byte_for_byte():
    shipped = resources.files("calprompt.calibration").joinpath("assets")
    for name, content in build_noun_files().items():
        assert shipped.joinpath(name).read_bytes() == content, name
    assert "Princeton University" in shipped.joinpath(LICENSE_FILE).read_text(encoding="utf-8")


def test_noun_list_builder_names_a_missing_database(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        build_noun_files(tmp_path)


def test_shipped_nouns_are_clean_sorted_and_sizeable():
    nouns = wordnet_nouns()
    assert len(nouns) > 10_000 and list(nouns) == sorted(set(nouns))
    assert all(noun == noun.lower().strip() and len(noun) >= 3 for noun in nouns)
    assert {"dog", "cat", "car"} <= set(nouns)
    header = resources.files("calprompt.calibration").joinpath("assets", NOUNS_FILE).read_text().splitlines()[:2]
    assert all(line.startswith("#") for line in header) and "Princeton" in header[1]


def test_class_names_are_excluded_after_normalisation():
    nouns = ["dog", "golden retriever", "cat", "sea lion", "tree"]
    assert candidate_names(nouns, ["Dog", "sea_lion", "Golden  Retriever"]) == ["cat", "tree"]


def test_ranking_keeps_the_most_base_like_names():
    g = torch.Generator().manual_seed(1)
    features, base = torch.randn(30, 8, generator=g), torch.randn(4, 8, generator=g)
    names = [f"noun{i}" for i in range(30)]
    unit = features.double().numpy() / np.linalg.norm(features.double().numpy(), axis=1, keepdims=True)
    unit_base = base.double().numpy() / np.linalg.norm(base.double().numpy(), axis=1, keepdims=True)
    score = (unit @ unit_base.T).mean(1)
    expected = [names[i] for i in np.argsort(-score, kind="stable")[:10]]
    assert rank_by_base_similarity(features, base, names, top_k=10) == expected


def test_select_outliers_with_a_real_text_encoder(tiny_backbone):
    classnames = ["dog", "cat", "horse"]
    encode = partial(zero_shot_text_features, tiny_backbone, templates="a photo of a {}.")
    nouns = (*wordnet_nouns()[:300], "dog")
    chosen = select_outliers(encode, nouns, classnames, encode(classnames), top_k=50)
    assert len(chosen) == 50 and "dog" not in chosen and len(set(chosen)) == 50
    names = candidate_names(nouns, classnames)
    assert chosen == rank_by_base_similarity(encode(names), encode(classnames), names, top_k=50)


def test_sampler_depends_only_on_seed_epoch_and_step():
    sampler = OutlierSampler(5000, 64, seed=3)
    first = sampler.indices(epoch=2, step=7)
    assert first.shape == (64,) and len(set(first.tolist())) == 64 and int(first.max()) < 5000
    assert torch.equal(first, OutlierSampler(5000, 64, seed=3).indices(epoch=2, step=7))
    assert not torch.equal(first, sampler.indices(epoch=2, step=8))
    assert not torch.equal(first, sampler.indices(epoch=3, step=7))
    assert not torch.equal(first, OutlierSampler(5000, 64, seed=4).indices(epoch=2, step=7))


def test_sampler_refuses_a_batch_larger_than_the_pool():
    with pytest.raises(ValueError, match="batch_size"):
        OutlierSampler(10, 11, seed=0)


def test_dor_steps_pull_coop_outlier_features_back_to_zero_shot(tiny_backbone):
    """The pieces composed as the training loop will: select outliers, draw a step's batch, encode it with the tuned
    prompts, and descend dor_loss on CoOp's context (perturbed away from its zero-shot init): the loss falls."""
    from calprompt.methods import build_method

    classnames = ["dog", "cat", "horse"]
    encode = partial(zero_shot_text_features, tiny_backbone, templates="a photo of a {}.")
    outliers = select_outliers(encode, wordnet_nouns()[:200], classnames, encode(classnames), top_k=40)
    frozen = encode(outliers)  # once per run: (40, D)
    torch.manual_seed(0)
    method = build_method("coop", tiny_backbone, classnames)
    with torch.no_grad():
        for parameter in method.trainable_parameters().values():
            parameter.add_(0.5 * torch.randn_like(parameter))
    optimizer = torch.optim.SGD(list(method.trainable_parameters().values()), lr=0.5)
    sampler = OutlierSampler(len(outliers), 8, seed=1)
    losses = []
    for step in range(6):
        batch = sampler.indices(epoch=0, step=step)
        method.set_classnames([outliers[i] for i in batch.tolist()])
        loss = dor_loss(method.encode_text(), frozen[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    method.set_classnames(classnames)
    assert losses[-1] < losses[0], losses


def test_dor_weight_follows_the_method_and_user_overrides_win():
    from calprompt.experiments.config import RunConfig
    from calprompt.experiments.protocols import run_objective
    from calprompt.methods import available_methods

    # DOR (ICML 2025): 8 for CoOp, 2 for the other prompt learners
    assert build_objective("dor", method="coop").terms[0][1] == 8.0
    for method in sorted(set(available_methods()) - {"coop", "zeroshot"}):
        assert build_objective("dor", method=method).terms[0][1] == 2.0, method
    assert run_objective(RunConfig(method="kgcoop", calibration="dor")).terms[0][1] == 2.0
    assert run_objective(RunConfig(method="coop", calibration="dor")).terms[0][1] == 8.0
    overridden = RunConfig(method="maple", calibration="dor", calibration_options={"weight": 5.0})
    assert run_objective(overridden).terms[0][1] == 5.0
