"""Issue 22, Must show 1: the label-free test-time terms equal the authors' code on the same tensors.

The oracles below re-type the public formulas (azshue/TPT ``tpt_classification.py``: ``select_confident_samples``,
``avg_entropy``; hee-suk-yoon/C-TPT ``clip/custom_clip.py``: the ``l2_norm_mean`` dispersion; ashshaksharifdeen/O-TPT
``otpt_classification.py``: the Householder block, with its (C, C, C) reflection matrices built explicitly). Parity
is asserted to 1e-6 relative in float32 inputs computed both ways; the Householder value is also checked against
its closed form ``mean_i | ||W_i|| - 1 |`` in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from calprompt.calibration import build_objective
from calprompt.calibration.registry import get_term
from calprompt.calibration.test_time import (
    confident_views,
    gram_orthogonality,
    householder_orthogonality,
    marginal_entropy,
    negative_text_dispersion,
    text_feature_dispersion,
)
from tests.test_time_oracles import ctpt_l2_norm_mean, otpt_householder, tpt_avg_entropy, tpt_select_confident_samples

RTOL = 1e-6


# ---------------------------------------------------------------- tensors like the public code's
def view_logits(views: int, classes: int, seed: int) -> torch.Tensor:
    """Scale-100 logits of ``views`` views: cosines of random unit features, as CLIP's."""
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(views, 64, generator=g), dim=-1)
    text = F.normalize(torch.randn(classes, 64, generator=g), dim=-1)
    return 100.0 * image @ text.T


def text_features(classes: int, seed: int, spread: float = 0.3) -> torch.Tensor:
    """L2-normalised class features around a shared direction (class prompts differ only by the name)."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(1, 64, generator=g)
    return F.normalize(shared + spread * torch.randn(classes, 64, generator=g), dim=-1)


def assert_relative(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=RTOL, atol=0)


# ---------------------------------------------------------------- TPT
@pytest.mark.parametrize(("views", "classes", "top"), [(64, 10, 0.1), (64, 1000, 0.1), (16, 37, 0.3), (8, 5, 1.0)])
def test_confident_views_and_averaged_entropy_match_tpt(views: int, classes: int, top: float) -> None:
    logits = view_logits(views, classes, seed=views + classes)
    kept, expected_idx = tpt_select_confident_samples(logits, top)
    idx = confident_views(logits, top)
    assert idx.tolist() == expected_idx.tolist()
    assert_relative(marginal_entropy(logits[idx]), tpt_avg_entropy(kept))


def test_averaged_entropy_is_batched_per_image() -> None:
    logits = torch.stack([view_logits(6, 20, seed) for seed in range(3)])  # (B, K, C)
    expected = torch.stack([tpt_avg_entropy(z) for z in logits])
    assert_relative(marginal_entropy(logits), expected)
    idx = confident_views(torch.stack([view_logits(64, 20, seed) for seed in range(3)]), 0.1)
    for b in range(3):
        assert idx[b].tolist() == tpt_select_confident_samples(view_logits(64, 20, b), 0.1)[1].tolist()


def test_averaged_entropy_survives_an_underflowing_class() -> None:
    logits = torch.tensor([[0.0, 200.0, -200.0], [0.0, 150.0, -300.0]])  # class 2's probability underflows
    value = marginal_entropy(logits)
    assert torch.isfinite(value)
    assert_relative(value, tpt_avg_entropy(logits))


def test_a_fraction_keeping_no_view_is_refused() -> None:
    with pytest.raises(ValueError, match=r"confident fraction.*at least one of the 8 views"):
        confident_views(view_logits(8, 5, 0), 0.1)


# ---------------------------------------------------------------- C-TPT
@pytest.mark.parametrize("classes", [2, 47, 1000])
def test_dispersion_matches_ctpt(classes: int) -> None:
    features = text_features(classes, seed=classes)
    assert_relative(text_feature_dispersion(features), ctpt_l2_norm_mean(features))
    assert_relative(negative_text_dispersion(features), -ctpt_l2_norm_mean(features))
    batch = torch.stack([features, text_features(classes, seed=classes + 1)])
    assert_relative(text_feature_dispersion(batch)[1], ctpt_l2_norm_mean(batch[1]))


# ---------------------------------------------------------------- O-TPT
@pytest.mark.parametrize("classes", [3, 47, 200])
def test_householder_value_matches_otpt_code(classes: int) -> None:
    features = text_features(classes, seed=classes)
    assert_relative(householder_orthogonality(features), otpt_householder(features))


def test_householder_value_is_the_gram_row_norm_distance_to_one() -> None:
    features = text_features(31, seed=5).double()
    closed_form = ((features @ features.T).norm(dim=1) - 1).abs().mean()
    torch.testing.assert_close(householder_orthogonality(features), closed_form, rtol=1e-12, atol=0)


def test_householder_and_gram_forms_differ() -> None:
    """The code's value and the Gram-residual form are different functions: on orthonormal rows both are 0, but on
    rows that all make the same angle they disagree beyond rounding."""
    eye = torch.eye(4, 8, dtype=torch.float64)
    assert householder_orthogonality(eye).item() == pytest.approx(0.0, abs=1e-15)
    assert gram_orthogonality(eye).item() == pytest.approx(0.0, abs=1e-15)
    features = F.normalize(text_features(6, seed=0).double(), dim=-1)
    gram = features @ features.T
    off_diagonal = (gram - torch.eye(6, dtype=torch.float64)).square().sum()
    torch.testing.assert_close(gram_orthogonality(features), off_diagonal, rtol=1e-12, atol=0)
    assert abs(householder_orthogonality(features) - gram_orthogonality(features)) > 1e-3


def test_householder_gradient_is_finite_on_an_orthonormal_row() -> None:
    features = torch.eye(3, 5, dtype=torch.float64).requires_grad_()
    householder_orthogonality(features).backward()
    assert torch.isfinite(features.grad).all()


# ---------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "term", ["tpt_entropy", "negative_text_dispersion", "householder_orthogonality", "gram_orthogonality"]
)
def test_test_time_terms_need_no_labels(term: str) -> None:
    assert "labels" not in get_term(term).needs


@pytest.mark.parametrize("preset", ["c-tpt", "o-tpt", "o-tpt-gram", "moments"])
def test_test_time_presets_need_labels_only_for_their_base_loss(preset: str) -> None:
    objective = build_objective(preset)
    assert all("labels" not in term.needs for term, _ in objective.terms)
