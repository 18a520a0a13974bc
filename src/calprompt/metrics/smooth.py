"""Smooth ECE (Blasiok & Nakkiran, ICLR 2024): the calibration error of a kernel-smoothed reliability curve.

For top-label confidences ``f_i`` and correctness ``y_i``, the residuals ``r_i = f_i - y_i`` are smoothed with a
Gaussian kernel of bandwidth ``sigma`` reflected at 0 and 1; with ``R(t)`` the smoothed residual mass and ``D(t)``
the smoothed sample mass at ``t``,

    smECE_sigma = sum_t |R(t)| / sum_t D(t)      (t on a uniform mesh of [0, 1])

and the bandwidth is the fixed point ``sigma* = smECE_sigma*``, found by bisection (the estimate is then at the same
scale as the bins it implicitly uses). The discretisation is that of the authors' ``relplot`` package, so the values
agree with ``relplot.smECE`` to rounding: samples are split linearly onto a grid of ``G`` points, the grid is
convolved with the sampled kernel, and the result is interpolated onto a mesh of ``max(200, round(10 / sigma))``
points, with ``G = max(2000, round(20 / sigma)) // 2 + 1``. ``D`` gets ``1e-4`` added per mesh point.

Everything is vectorised over *sample weights*: ``weights`` (B, N) of bootstrap counts give B estimates at once, each
with its own bandwidth search, sharing the grid work for every resample (see :mod:`calprompt.metrics.bootstrap`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from calprompt.metrics.calibration import checked_probs_labels, top_label
from calprompt.metrics.checks import ArrayLike

# relplot's constants: bisection floor and steps, mesh and grid sizes, and the density floor per mesh point.
BANDWIDTH_FLOOR = 1e-3
BISECTION_STEPS = 10
MIN_MESH_POINTS = 200
MIN_GRID_POINTS = 2000
DENSITY_FLOOR = 1e-4
# From this many weight rows on, grid masses come from one sparse matrix product instead of scatters.
_SPARSE_MIN_ROWS = 8


def grid_points(sigma: float) -> int:
    """Number of grid points ``G`` the kernel is sampled on for bandwidth ``sigma``."""
    return max(MIN_GRID_POINTS, round(20 / sigma)) // 2 + 1


def mesh_points(sigma: float) -> int:
    """Number of uniform mesh points the smoothed curves are evaluated on for bandwidth ``sigma``."""
    return max(MIN_MESH_POINTS, round(10 / sigma))


def _grid_points_of(sigma: Tensor) -> Tensor:
    """`grid_points` of every bandwidth (B,) at once (``torch.round`` rounds halves to even, as ``round`` does)."""
    return torch.round(_divided(20.0, sigma)).clamp(min=MIN_GRID_POINTS).to(torch.int64) // 2 + 1


def _mesh_points_of(sigma: Tensor) -> Tensor:
    """`mesh_points` of every bandwidth (B,) at once."""
    return torch.round(_divided(10.0, sigma)).clamp(min=MIN_MESH_POINTS).to(torch.int64)


def _divided(numerator: float, values: Tensor) -> Tensor:
    """``numerator / values`` rounded as Python divides floats: torch's ``number / tensor`` multiplies by the
    reciprocal, which rounds differently (20 / (20 / 2001.5) is then 2001.4999999999998, not 2001.5)."""
    return torch.full_like(values, numerator) / values


def _split_onto_grid(f: Tensor, values: Tensor, weights: Tensor, n_grid: int) -> Tensor:
    """Grid masses of each per-sample value column, summed with each row of sample weights.

    Every sample spreads its value linearly onto its two neighbouring grid points of [0, 1] (relplot's rounding to
    the grid). That is a fixed sparse (N, K G) matrix for the K columns of ``values`` (N, K), so the (B, N) weights
    become grid masses with one sparse product: (K B, G), column by column (all rows of column 0 first).
    """
    n, columns = values.shape
    position = f * (n_grid - 1)  # (N,)
    left = position.to(torch.int64).clamp(0, n_grid - 2)  # truncation, as numpy's astype(int) on values >= 0
    frac = position - left
    if weights.shape[0] < _SPARSE_MIN_ROWS:  # a few rows: scatter directly, no sparse matrix to build
        grids = weights.new_zeros(columns * weights.shape[0], n_grid)
        weighted = (weights[None] * values.T[:, None, :]).reshape(-1, n)  # (K B, N)
        grids.index_add_(1, left, weighted * (1 - frac))
        return grids.index_add_(1, left + 1, weighted * frac)
    shares = torch.stack([1 - frac, frac], 1)[:, None, :] * values[:, :, None]  # (N, K, 2)
    columns_offset = n_grid * torch.arange(columns, device=f.device)[:, None]  # column k's grid points sit at k G + g
    targets = left[:, None, None] + torch.arange(2, device=f.device) + columns_offset  # (N, K, 2)
    samples = torch.arange(n, device=f.device)[:, None, None].expand_as(targets)
    operator = torch.sparse_coo_tensor(
        torch.stack([samples.reshape(-1), targets.reshape(-1)]),
        shares.reshape(-1),
        (n, columns * n_grid),
        check_invariants=False,
    ).coalesce()
    with warnings.catch_warnings():  # torch labels its CSR support beta; dense @ CSR is exact and much faster
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        grids = weights @ operator.to_sparse_csr()  # (B, K G)
    return grids.view(weights.shape[0], columns, n_grid).transpose(0, 1).reshape(columns * weights.shape[0], n_grid)


def _periodic_spectrum(grid: Tensor) -> Tensor:
    """rFFT (B, G) of the even periodic extension ``v_0 .. v_{G-1}, v_{G-2} .. v_1`` (period ``2 (G - 1)``)."""
    return torch.fft.rfft(torch.cat([grid, grid.flip(1)[:, 1:-1]], dim=1))


def _kernel_spectrum(sigma: Tensor, n_grid: int) -> Tensor:
    """rFFT (U, G) of relplot's G-tap Gaussian kernel for each bandwidth (U,), laid out on the circle of period P.

    The taps are sampled at ``linspace(0, 1, G) - 1/2``; tap ``j`` acts at lag ``j - G // 2``.
    """
    period = 2 * (n_grid - 1)
    t = torch.linspace(0, 1, n_grid, dtype=torch.float64, device=sigma.device)
    width = sigma[:, None]
    taps = torch.exp(-((t - 0.5) ** 2) / (2 * width**2)) / (math.sqrt(2 * math.pi) * width)  # (U, G)
    lags = (torch.arange(n_grid, device=sigma.device) - n_grid // 2) % period  # where tap j sits in the period
    return torch.fft.rfft(taps.new_zeros(taps.shape[0], period).index_copy_(1, lags, taps))


def _reflected_smooth(spectrum: Tensor, sigma: Tensor, n_grid: int) -> Tensor:
    """Grid values (B, G) convolved, each row with the kernel of its own bandwidth ``sigma`` (B,), reflected at both
    ends of [0, 1]; ``spectrum`` is the rows' :func:`_periodic_spectrum`. With ``sigma`` of B / 2 entries, both
    halves of the rows (residuals, then weights, as `_Grids.at` returns them) use those bandwidths.

    relplot convolves the reflected sequence ``[v_{G-1} .. v_1, v_0 .. v_{G-1}, v_{G-2} .. v_0]`` with the kernel
    and keeps the centred window. That sequence is a stretch of the even periodic extension of ``v`` with period
    ``P = 2 (G - 1)``, and the G taps fit in one period, so the same numbers are a circular convolution of period
    ``P``: a product of spectra. Kernel spectra are computed once per distinct bandwidth.
    """
    distinct, which = torch.unique(sigma, return_inverse=True)
    kernels = _kernel_spectrum(distinct, n_grid)
    if spectrum.shape[0] == 2 * sigma.shape[0]:  # residual and weight rows of the same b bandwidths: one gather
        halves = spectrum.view(2, sigma.shape[0], -1) * kernels[which]
        return torch.fft.irfft(halves.view(spectrum.shape), 2 * (n_grid - 1))[:, :n_grid]
    return torch.fft.irfft(spectrum * kernels[which], 2 * (n_grid - 1))[:, :n_grid]


def _interpolate(mesh: Tensor, grid: Tensor) -> Tensor:
    """Linear interpolation of (B, G) values at ``k / (G - 1)`` onto the meshes (B, M) or (M,): (B, M)."""
    n_grid = grid.shape[1]
    mesh = mesh.expand(grid.shape[0], -1)
    left = (mesh * (n_grid - 1)).to(torch.int64).clamp(0, n_grid - 2)
    frac = (mesh - left / (n_grid - 1)) * (n_grid - 1)
    return grid.gather(1, left) * (1 - frac) + grid.gather(1, left + 1) * frac


def _meshes(sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's uniform mesh of [0, 1] with :func:`mesh_points` points, padded to the longest: (B, M), mask (B, M)."""
    points = _mesh_points_of(sigma)  # (B,)
    k = torch.arange(int(points.max()), dtype=torch.float64, device=sigma.device)
    inside = k < points[:, None]
    return (k / (points[:, None] - 1)).clamp(max=1), inside


class _Grids:
    """Spectra of the grid masses of residuals and weights per grid size, computed once and shared by every
    bandwidth tried (rows: residual spectra of the B weight rows, then their weight spectra)."""

    def __init__(self, f: Tensor, residual: Tensor, weights: Tensor) -> None:
        self.f, self.values, self.weights = f, torch.stack([residual, torch.ones_like(residual)], 1), weights
        self._cache: dict[int, Tensor] = {}

    def at(self, n_grid: int, rows: Tensor) -> Tensor:
        """Spectra (2 b, G) of the selected rows: their residual spectra, then their weight spectra."""
        if n_grid not in self._cache:
            self._cache[n_grid] = _periodic_spectrum(_split_onto_grid(self.f, self.values, self.weights, n_grid))
        if rows.shape[0] == self.weights.shape[0]:  # every row (`_at_bandwidths` selects rows in order): no copy
            return self._cache[n_grid]
        return self._cache[n_grid][torch.cat([rows, rows + self.weights.shape[0]])]


def _smooth_ece_at(grids: _Grids, n_grid: int, sigma: Tensor, rows: Tensor) -> Tensor:
    """smECE of the weight rows ``rows`` (b,), each at its bandwidth ``sigma`` (b,), on a grid of ``n_grid``."""
    mesh, inside = _meshes(sigma)
    smoothed = _interpolate(mesh.repeat(2, 1), _reflected_smooth(grids.at(n_grid, rows), sigma, n_grid))
    residual, density = smoothed.chunk(2)  # (b, M) each
    density = (density + DENSITY_FLOOR) * inside
    # |R / D| * D summed over each row's mesh: relplot's sum(|rs| * dens) / sum(dens)
    return (residual / density.clamp(min=DENSITY_FLOOR)).abs().mul(density).sum(1) / density.sum(1)


def _at_bandwidths(grids: _Grids, sigmas: Tensor) -> Tensor:
    """smECE of every weight row at its own bandwidth (B,), one vectorised pass per distinct grid size.

    Bandwidths >= 0.01 share one grid size, so in practice this is one pass for all rows.
    """
    sizes = _grid_points_of(sigmas)
    result = torch.empty_like(sigmas)
    for n_grid in torch.unique(sizes).tolist():  # a handful of grid sizes, never one pass per row
        rows = torch.nonzero(sizes == n_grid).squeeze(1)
        result[rows] = _smooth_ece_at(grids, n_grid, sigmas[rows], rows)
    return result


def smooth_ece_from_top_label(
    confidence: Tensor, correct: Tensor, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """smECE and its bandwidth, each float64 (B,), for (N,) confidences and correctness and (B, N) sample weights.

    Without ``weights`` B = 1 (every sample weighs 1). The bandwidth search is relplot's: accept ``sigma = 1`` if
    ``1 < smECE_1``, else bisect [0, 1] ten times for the smallest ``sigma`` with ``sigma >= smECE_sigma`` (or
    ``sigma >= 1e-3``), run for all rows at once.
    """
    f = confidence.to(torch.float64)
    if weights is None:
        weights = torch.ones(1, f.shape[0], dtype=torch.float64, device=f.device)
    grids = _Grids(f, f - correct.to(torch.float64), weights.to(torch.float64))

    high = torch.ones(weights.shape[0], dtype=torch.float64, device=f.device)
    at_high = _at_bandwidths(grids, high)  # smECE at the current upper end, kept so the answer needs no extra pass
    at_one = at_high
    done = high < at_one  # relplot accepts sigma = 1 outright when 1 < smECE_1
    low = torch.zeros_like(high)
    for _ in range(BISECTION_STEPS):
        mid = (high + low) / 2
        at_mid = _at_bandwidths(grids, mid)
        ok = (mid < BANDWIDTH_FLOOR) | (mid < at_mid)
        low = torch.where(ok, mid, low)
        high, at_high = torch.where(ok, high, mid), torch.where(ok, at_high, at_mid)
    return torch.where(done, at_one, at_high), torch.where(done, torch.ones_like(high), high)


@dataclass(frozen=True)
class SmoothCurve:
    """A kernel-smoothed reliability curve on a mesh: accuracy ``E[correct | confidence = t]`` and sample density."""

    bandwidth: float
    mesh: Tensor  # (M,)
    accuracy: Tensor  # (B, M): one row per weight row
    density: Tensor  # (B, M), integrates to about 1 over [0, 1]


def smooth_reliability_curve(
    confidence: Tensor, correct: Tensor, bandwidth: float, *, n_mesh: int = 101, weights: Tensor | None = None
) -> SmoothCurve:
    """The smoothed accuracy curve at a fixed ``bandwidth`` (the smECE's, typically) for each weight row.

    The same kernel smoother as :func:`smooth_ece_from_top_label`, applied to correctness instead of residuals.
    """
    f = confidence.to(torch.float64)
    if weights is None:
        weights = torch.ones(1, f.shape[0], dtype=torch.float64, device=f.device)
    weights = weights.to(torch.float64)
    n_grid = grid_points(bandwidth)
    hit = correct.to(torch.float64)
    grids = _split_onto_grid(f, torch.stack([hit, torch.ones_like(hit)], 1), weights, n_grid)
    mesh = torch.linspace(0, 1, n_mesh, dtype=torch.float64, device=f.device)
    widths = torch.full((grids.shape[0],), bandwidth, dtype=torch.float64, device=f.device)
    hits, mass = _interpolate(mesh, _reflected_smooth(_periodic_spectrum(grids), widths, n_grid)).chunk(2)
    density = mass / weights.sum(1, keepdim=True)  # the kernel is a density: smoothed mass per unit length
    return SmoothCurve(bandwidth, mesh, hits / (mass + DENSITY_FLOOR), density)


def smooth_calibration_error(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """Top-label smooth ECE (Blasiok & Nakkiran, 2024) with its automatic bandwidth, as a fraction in [0, 1]."""
    probs, labels = checked_probs_labels(probs, labels)
    return smooth_ece_from_top_label(*top_label(probs, labels))[0][0]
