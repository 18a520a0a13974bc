"""The paper's regularizers against hand-computed values and naive python-loop oracles."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from calprompt.calibration import (
    TextMoments,
    cross_entropy,
    logit_margins,
    margin_mean_variance,
    text_moment_matching,
    text_moments,
)

# ---------------------------------------------------------------- oracles (plain python, no torch math)


def naive_margins(z: list[list[float]], y: list[int]) -> list[float]:
    return [row[t] - max(v for j, v in enumerate(row) if j != t) for row, t in zip(z, y, strict=True)]


def naive_moments(rows: list[list[float]]) -> tuple[list[float], list[list[float]]]:
    unit = [[v / math.sqrt(sum(w * w for w in r)) for v in r] for r in rows]
    c, d = len(unit), len(unit[0])
    mean = [sum(u[k] for u in unit) / c for k in range(d)]
    cov = [[sum((u[a] - mean[a]) * (u[b] - mean[b]) for u in unit) / c for b in range(d)] for a in range(d)]
    return mean, cov


def naive_matching(tuned: list[list[float]], frozen: list[list[float]]) -> float:
    (mean, cov), (mean0, cov0) = naive_moments(tuned), naive_moments(frozen)
    d = len(mean)
    return sum((mean[k] - mean0[k]) ** 2 for k in range(d)) + sum(
        (cov[a][b] - cov0[a][b]) ** 2 for a in range(d) for b in range(d)
    )


# ---------------------------------------------------------------- margins


def test_margins_hand_computed_with_ties() -> None:
    z = torch.tensor([[3.0, 1.0, 2.0], [1.0, 5.0, 5.0], [0.0, 0.0, 0.0], [2.0, 7.0, -1.0]])
    y = torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(logit_margins(z, y), torch.tensor([1.0, 0.0, 0.0, -5.0]), rtol=0, atol=0)


def test_margins_two_classes() -> None:
    z = torch.tensor([[1.5, -0.5], [2.0, 4.0]])
    torch.testing.assert_close(logit_margins(z, torch.tensor([1, 1])), torch.tensor([-2.0, 2.0]), rtol=0, atol=0)


def test_margins_match_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 7, generator=g, dtype=torch.float64) * 10
    y = torch.randint(0, 7, (16,), generator=g)
    expected = torch.tensor(naive_margins(z.tolist(), y.tolist()), dtype=torch.float64)
    torch.testing.assert_close(logit_margins(z, y), expected)


def test_margin_mean_variance_hand_computed() -> None:
    # margins [1, 0, 0, -5]: mean -1, biased variance (4 + 1 + 1 + 16) / 4 = 5.5
    z = torch.tensor([[3.0, 1.0, 2.0], [1.0, 5.0, 5.0], [0.0, 0.0, 0.0], [2.0, 7.0, -1.0]])
    y = torch.tensor([0, 1, 2, 0])
    assert margin_mean_variance(z, y).item() == pytest.approx(0.1 * 1 + 0.01 * 5.5)
    assert margin_mean_variance(z, y, alpha=0.5, beta=0.2).item() == pytest.approx(0.5 + 0.2 * 5.5)


def test_margin_mean_variance_single_sample_has_no_variance() -> None:
    z = torch.tensor([[4.0, 1.0]])
    assert margin_mean_variance(z, torch.tensor([0])).item() == pytest.approx(-0.1 * 3.0)


def test_margins_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_margins(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="`labels`"):
        logit_margins(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        logit_margins(torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="`logits`"):
        logit_margins(torch.zeros(3), torch.zeros(3, dtype=torch.long))


def test_cross_entropy_hand_computed() -> None:
    z = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])
    # p_y = 3/4 for the first row, 1/2 for the second
    expected = -(math.log(0.75) + math.log(0.5)) / 2
    assert cross_entropy(z, torch.tensor([1, 0])).item() == pytest.approx(expected)


# ---------------------------------------------------------------- text moments


def test_text_moments_hand_computed() -> None:
    moments = text_moments(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # unit rows e1, e2
    torch.testing.assert_close(moments.mean, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(moments.cov, torch.tensor([[0.25, -0.25], [-0.25, 0.25]]))


def test_text_moments_match_naive_loop() -> None:
    rows = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean, cov = naive_moments(rows.tolist())
    moments = text_moments(rows)
    torch.testing.assert_close(moments.mean, torch.tensor(mean, dtype=torch.float64))
    torch.testing.assert_close(moments.cov, torch.tensor(cov, dtype=torch.float64))


def test_text_moment_matching_hand_computed() -> None:
    # tuned: mu = (.5, .5), Sigma = [[.25, -.25], [-.25, .25]]; frozen rows both along e1: mu0 = (1, 0), Sigma0 = 0
    tuned = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    frozen = torch.tensor([[2.0, 0.0], [5.0, 0.0]])
    assert text_moment_matching(tuned, frozen).item() == pytest.approx(0.25 + 0.25 + 4 * 0.0625)
    # per image (B, C, D): the second image matches exactly, so the mean over images halves the loss
    batched = torch.stack([tuned, torch.tensor([[3.0, 0.0], [7.0, 0.0]])])
    assert text_moment_matching(batched, frozen).item() == pytest.approx(0.75 / 2)


def test_text_moment_matching_matches_naive_loop() -> None:
    g = torch.Generator().manual_seed(2)
    tuned = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    frozen = torch.randn(5, 4, generator=g, dtype=torch.float64)
    per_image = [naive_matching(t.tolist(), frozen.tolist()) for t in tuned]
    expected = sum(per_image) / len(per_image)
    assert text_moment_matching(tuned, frozen).item() == pytest.approx(expected, rel=1e-12)
    assert text_moment_matching(tuned[0], text_moments(frozen)).item() == pytest.approx(per_image[0], rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_text_moment_matching_is_exactly_zero_on_itself(dtype: torch.dtype) -> None:
    frozen = torch.randn(10, 32, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert text_moment_matching(frozen, frozen).item() == 0.0
    assert text_moment_matching(frozen, text_moments(frozen)).item() == 0.0


def test_text_moment_matching_is_invariant_to_row_scaling() -> None:
    g = torch.Generator().manual_seed(4)
    tuned, frozen = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    scales = torch.rand(6, 1, generator=g) * 50 + 0.01
    reference = text_moment_matching(tuned, frozen)
    torch.testing.assert_close(text_moment_matching(tuned * scales, frozen), reference)
    torch.testing.assert_close(text_moment_matching(tuned, frozen / scales), reference)
    assert reference.item() > 0


def test_text_moment_matching_rejects_mismatched_dimension() -> None:
    with pytest.raises(ValueError, match="dimension 8"):
        text_moment_matching(torch.randn(3, 8), torch.randn(3, 4))
    with pytest.raises(ValueError, match="`tuned`"):
        text_moment_matching(torch.randn(8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="`features`"):
        text_moments(torch.randn(2, 3, 8))


def test_text_moments_to_moves_both() -> None:
    moments = text_moments(torch.randn(3, 4)).to(torch.float64)
    assert isinstance(moments, TextMoments)
    assert moments.mean.dtype == moments.cov.dtype == torch.float64


# ---------------------------------------------------------------- gradients


def test_gradcheck_margin_mean_variance() -> None:
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 3).requires_grad_()  # no ties at the max
    y = torch.randint(0, 4, (6,), generator=g)
    assert gradcheck(lambda z: margin_mean_variance(z, y, alpha=0.3, beta=0.2), (z,))


@pytest.mark.parametrize("shape", [(5, 4), (3, 5, 4)])
def test_gradcheck_text_moment_matching(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(6)
    tuned = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()
    frozen = torch.randn(5, 4, generator=g, dtype=torch.float64).requires_grad_()
    assert gradcheck(text_moment_matching, (tuned, frozen))


# ---------------------------------------------------------------- precision


def _random_case(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(8, 5, generator=g) * 20,
        "labels": torch.randint(0, 5, (8,), generator=g),
        "tuned": torch.randn(5, 64, generator=g),
        "frozen": torch.randn(5, 64, generator=g),
    }


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    case = _random_case(7)
    z, tuned, frozen = case["logits"].to(dtype), case["tuned"].to(dtype), case["frozen"].to(dtype)
    for result, reference in [
        (margin_mean_variance(z, case["labels"]), margin_mean_variance(z.float(), case["labels"])),
        (cross_entropy(z, case["labels"]), cross_entropy(z.float(), case["labels"])),
        (text_moment_matching(tuned, frozen), text_moment_matching(tuned.float(), frozen.float())),
    ]:
        assert result.dtype == torch.float32 and result.ndim == 0
        assert result.item() == reference.item()


def test_autocast_is_disabled_inside() -> None:
    case = _random_case(8)
    plain = text_moment_matching(case["tuned"], case["frozen"])
    plain_margin = margin_mean_variance(case["logits"], case["labels"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # a bf16 matmul would change the covariances (and hence the value) well beyond float32 round-off
        under = text_moment_matching(case["tuned"], case["frozen"])
        under_margin = margin_mean_variance(case["logits"], case["labels"])
    assert under.dtype == under_margin.dtype == torch.float32
    assert under.item() == plain.item() and under_margin.item() == plain_margin.item()


def test_fp16_features_near_each_other_keep_their_small_difference() -> None:
    # The moment differences here are ~1e-4, their squares ~1e-8: fp16 arithmetic would flush them to zero. The
    # float32 result must agree with a float64 computation on the same (fp16-rounded) inputs.
    g = torch.Generator().manual_seed(9)
    frozen = torch.randn(10, 64, generator=g)
    tuned = (frozen + 1e-3 * torch.randn(10, 64, generator=g)).half()
    value = text_moment_matching(tuned, text_moments(frozen))
    reference = text_moment_matching(tuned.double(), frozen.double())
    assert value.dtype == torch.float32
    assert 0 < reference.item() < 1e-4
    assert value.item() == pytest.approx(reference.item(), rel=1e-3)
