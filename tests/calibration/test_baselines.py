"""Train-time baselines (MbLS, ZS-Norm, Penalty, LS, focal) against hand-computed values and python-loop oracles."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from calprompt.calibration import (
    focal_loss,
    label_smoothing_cross_entropy,
    mbls_penalty,
    zs_norm_cross_entropy,
    zs_norm_logits,
    zs_range_penalty,
)


def naive_log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_norm = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_norm for v in row]


def _rand(seed: int, *shape: int, scale: float = 10.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


# ---------------------------------------------------------------- MbLS


def test_mbls_hand_computed() -> None:
    # row 0: gaps to the max (20) are [20, 15, 0] -> relu(gap - 10) = [10, 5, 0]; row 1 is constant -> 0
    z = torch.tensor([[0.0, 5.0, 20.0], [1.0, 1.0, 1.0]])
    assert mbls_penalty(z).item() == pytest.approx(15 / 6)
    assert mbls_penalty(z, margin=4.0).item() == pytest.approx((16 + 11) / 6)


def test_mbls_matches_naive_loop() -> None:
    z = _rand(0, 5, 6, dtype=torch.float64)
    rows = z.tolist()
    expected = sum(max(0.0, max(r) - v - 10.0) for r in rows for v in r) / z.numel()
    assert mbls_penalty(z).item() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- ZS-Norm


def test_zs_norm_hand_computed_and_constant_row() -> None:
    z = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]])
    z0 = torch.tensor([[10.0, 20.0, 40.0], [-1.0, 4.0, 0.0]])
    expected = torch.tensor([[10.0, 25.0, 40.0], [-1.0, -1.0, -1.0]])  # constant row -> zero-shot minimum
    torch.testing.assert_close(zs_norm_logits(z, z0), expected)


@pytest.mark.parametrize("seed", range(5))
def test_zs_norm_hits_the_zero_shot_min_and_max_exactly(seed: int) -> None:
    z, z0 = _rand(seed, 32, 10, scale=30.0), _rand(seed + 100, 32, 10, scale=30.0) + 20.0
    normed = zs_norm_logits(z, z0)
    assert torch.equal(normed.amin(dim=1), z0.amin(dim=1))
    assert torch.equal(normed.amax(dim=1), z0.amax(dim=1))
    # the argmax is unchanged: the rescaling is increasing per row
    assert torch.equal(normed.argmax(dim=1), z.argmax(dim=1))


def test_zs_norm_cross_entropy_matches_naive_loop() -> None:
    z, z0 = _rand(1, 4, 5, dtype=torch.float64), _rand(2, 4, 5, dtype=torch.float64)
    y = [0, 3, 2, 4]
    total = 0.0
    for row, row0, t in zip(z.tolist(), z0.tolist(), y, strict=True):
        lo, hi, lo0, hi0 = min(row), max(row), min(row0), max(row0)
        normed = [(v - lo) / (hi - lo) * (hi0 - lo0) + lo0 for v in row]
        total -= naive_log_softmax(normed)[t]
    assert zs_norm_cross_entropy(z, torch.tensor(y), z0).item() == pytest.approx(total / 4, rel=1e-12)


def test_zs_norm_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="`zs_logits`"):
        zs_norm_logits(torch.zeros(4, 3), torch.zeros(4, 2))


# ---------------------------------------------------------------- Penalty


def test_zs_range_penalty_hand_computed() -> None:
    # zero-shot range [1, 30]: above = relu([-30, 20, -35]) -> 20/3, below = relu(1 - z) = [1, 0, 6] -> 7/3
    z, z0 = torch.tensor([[0.0, 50.0, -5.0]]), torch.tensor([[1.0, 30.0, 2.0]])
    assert zs_range_penalty(z, z0).item() == pytest.approx(9.0)
    assert zs_range_penalty(z0, z0).item() == 0.0


def test_zs_range_penalty_matches_naive_loop() -> None:
    z, z0 = _rand(3, 6, 4, scale=20.0, dtype=torch.float64), _rand(4, 6, 4, dtype=torch.float64)
    above = below = 0.0
    for row, row0 in zip(z.tolist(), z0.tolist(), strict=True):
        above += sum(max(0.0, v - max(row0)) for v in row)
        below += sum(max(0.0, min(row0) - v) for v in row)
    assert zs_range_penalty(z, z0).item() == pytest.approx((above + below) / z.numel(), rel=1e-12)


# ---------------------------------------------------------------- label smoothing, focal


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35, 1.0])
def test_label_smoothing_matches_naive_loop(smoothing: float) -> None:
    z = _rand(5, 6, 4, dtype=torch.float64)
    y = [0, 1, 2, 3, 3, 1]
    total = 0.0
    for row, t in zip(z.tolist(), y, strict=True):
        log_p = naive_log_softmax(row)
        target = [(1 - smoothing) * (j == t) + smoothing / len(row) for j in range(len(row))]
        total -= sum(q * lp for q, lp in zip(target, log_p, strict=True))
    result = label_smoothing_cross_entropy(z, torch.tensor(y), smoothing=smoothing)
    assert result.item() == pytest.approx(total / len(y), rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 3.0])
def test_focal_matches_naive_loop(gamma: float) -> None:
    z = _rand(6, 6, 4, scale=2.0, dtype=torch.float64)
    y = [0, 1, 2, 3, 3, 1]
    total = 0.0
    for row, t in zip(z.tolist(), y, strict=True):
        log_p = naive_log_softmax(row)[t]
        total -= (1 - math.exp(log_p)) ** gamma * log_p
    assert focal_loss(z, torch.tensor(y), gamma=gamma).item() == pytest.approx(total / len(y), rel=1e-10)


def test_focal_gradient_is_finite_when_confident() -> None:
    # p_y rounds to exactly 1 in float32; with gamma < 1 a naive (1 - p)^gamma has an infinite derivative there
    z = torch.tensor([[200.0, 0.0], [0.0, 1.0]], requires_grad=True)
    focal_loss(z, torch.tensor([0, 1]), gamma=0.5).backward()
    assert torch.isfinite(z.grad).all()


def test_constants_are_validated() -> None:
    z, y = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="`smoothing`"):
        label_smoothing_cross_entropy(z, y, smoothing=1.5)
    with pytest.raises(ValueError, match="`gamma`"):
        focal_loss(z, y, gamma=-1.0)
    with pytest.raises(ValueError, match="`margin`"):
        mbls_penalty(z, margin=-1.0)


# ---------------------------------------------------------------- gradients and precision


def test_gradcheck_baselines() -> None:
    # random float64 inputs: no ties at the max/min and no relu argument within gradcheck's eps of its kink
    z = _rand(7, 4, 5, scale=8.0, dtype=torch.float64).requires_grad_()
    z0 = _rand(8, 4, 5, scale=5.0, dtype=torch.float64).requires_grad_()
    y = torch.tensor([0, 4, 2, 1])
    assert gradcheck(lambda z: mbls_penalty(z, margin=6.0), (z,))
    assert gradcheck(zs_norm_logits, (z, z0))
    assert gradcheck(lambda z, z0: zs_norm_cross_entropy(z, y, z0), (z, z0))
    assert gradcheck(zs_range_penalty, (z, z0))
    assert gradcheck(lambda z: focal_loss(z, y), (z,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    z, z0 = _rand(9, 8, 5, scale=20.0).to(dtype), _rand(10, 8, 5, scale=20.0).to(dtype)
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(11))
    cases = [
        (lambda z, z0: mbls_penalty(z)),
        (lambda z, z0: zs_norm_cross_entropy(z, y, z0)),
        (lambda z, z0: zs_range_penalty(z, z0)),
        (lambda z, z0: label_smoothing_cross_entropy(z, y)),
        (lambda z, z0: focal_loss(z, y)),
    ]
    for fn in cases:
        result = fn(z, z0)
        assert result.dtype == torch.float32 and result.ndim == 0
        assert result.item() == fn(z.float(), z0.float()).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under = fn(z.float(), z0.float())
        assert under.dtype == torch.float32 and under.item() == result.item()
    assert zs_norm_logits(z, z0).dtype == torch.float32
