"""Split conformal prediction sets with the LAC, APS and RAPS scores.

Fit on a calibration split (in a run: the few-shot base validation split) at miscoverage ``alpha``: with ``n``
calibration scores ``s_i`` (the non-conformity of the true class), the threshold ``q`` is the
``ceil((n + 1)(1 - alpha))``-th smallest score (``+inf`` when that exceeds ``n``), and the set of a new input is
every class whose score is at most ``q``. If calibration and test samples are exchangeable, the set holds the true
class with probability at least ``1 - alpha``, and at most ``1 - alpha + 1 / (n + 1)`` for continuous (randomised)
scores (Vovk et al., 2005; Lei et al., 2018). Novel classes break exchangeability (other classes, other scores), so
their coverage is an empirical finding, not a guarantee.

Scores of class ``c`` for probabilities ``p`` (softmax of the logits, float64), with ``rank(c)`` the 1-based position
of ``c`` in ``p`` sorted in decreasing order (ties by class index) and ``u ~ U(0, 1)`` drawn once per sample:

- LAC (Sadinle et al., 2019): ``1 - p_c``.
- APS (Romano et al., 2020): ``sum_{rank(j) < rank(c)} p_j + u p_c`` (``+ p_c`` without randomisation).
- RAPS (Angelopoulos et al., ICLR 2021): APS ``+ lam * max(0, rank(c) - k_reg)``.

The uniforms come from a ``torch.Generator`` seeded with ``stable_seed(seed, stream, n)``, so a fitted calibrator
gives the same sets on every call and machine; calibration and test draw from different streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Self

import torch
from torch import Tensor

from calprompt._validation import check_choice, check_int, check_non_negative, check_positive_int, fail
from calprompt.calibration.posthoc import _require_fitted
from calprompt.data.views import stable_seed
from calprompt.metrics.checks import ArrayLike, check_labels, check_logits

Score = Literal["lac", "aps", "raps"]
SCORES: tuple[str, ...] = ("lac", "aps", "raps")


def conformal_uniforms(n: int, seed: int, stream: str, device: torch.device | str = "cpu") -> Tensor:
    """The seeded float64 uniforms (n,) used to randomise APS/RAPS for ``n`` samples of ``stream``."""
    generator = torch.Generator().manual_seed(stable_seed("conformal", seed, stream, n))
    return torch.rand(n, generator=generator, dtype=torch.float64).to(device)


def class_scores(
    probs: Tensor, score: Score, uniforms: Tensor | None = None, *, lam: float = 0.01, k_reg: int = 5
) -> Tensor:
    """Non-conformity score (N, C) of every class for probabilities (N, C); ``uniforms`` (N,) randomise APS/RAPS
    (``None``: the non-randomised scores)."""
    if score == "lac":
        return 1 - probs
    order = torch.sort(probs, dim=1, descending=True, stable=True).indices  # (N, C): classes by decreasing p
    sorted_probs = probs.gather(1, order)
    before = torch.cumsum(sorted_probs, dim=1) - sorted_probs  # mass ranked strictly above each position
    own = sorted_probs if uniforms is None else uniforms[:, None] * sorted_probs
    by_rank = before + own
    if score == "raps":
        rank = torch.arange(1, probs.shape[1] + 1, device=probs.device, dtype=probs.dtype)
        by_rank = by_rank + lam * (rank - k_reg).clamp(min=0)
    return torch.empty_like(by_rank).scatter_(1, order, by_rank)  # back to class order


def conformal_threshold(scores: Tensor, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest of the (n,) calibration scores, ``inf`` beyond ``n``."""
    n = scores.shape[0]
    k = math.ceil((n + 1) * (1 - alpha))
    return math.inf if k > n else float(torch.sort(scores).values[k - 1])


@dataclass(frozen=True)
class SetMetrics:
    """Empirical coverage (fraction of sets holding the true class) and mean set size of prediction sets."""

    coverage: float
    mean_set_size: float
    empty_fraction: float

    @classmethod
    def of(cls, sets: Tensor, labels: Tensor) -> SetMetrics:
        covered = sets.gather(1, labels[:, None]).squeeze(1).to(torch.float64).mean()
        size = sets.sum(dim=1).to(torch.float64)
        return cls(*torch.stack([covered, size.mean(), (size == 0).to(torch.float64).mean()]).tolist())


class SplitConformal:
    """Split conformal classifier: ``fit`` on calibration logits and labels, then ``predict_sets`` (N, C) bool.

    Attributes:
        threshold_: the calibrated score threshold ``q`` (may be ``inf``); present only after ``fit``.
        n_calibration_: number of calibration samples.
    """

    def __init__(
        self,
        score: Score = "aps",
        alpha: float = 0.1,
        *,
        randomized: bool = True,
        lam: float = 0.01,
        k_reg: int = 5,
        seed: int = 0,
    ) -> None:
        self.score = check_choice(score, "score", SCORES)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
            fail("alpha", "a miscoverage level strictly between 0 and 1 (e.g. 0.1)", alpha)
        self.alpha = float(alpha)
        if not isinstance(randomized, bool):
            fail("randomized", "True or False", randomized)
        self.randomized = randomized
        self.lam = check_non_negative(lam, "lam")
        self.k_reg = check_positive_int(k_reg, "k_reg")
        self.seed = check_int(seed, "seed")

    def scores(self, logits: ArrayLike, stream: str) -> Tensor:
        """Scores (N, C) of every class for logits (N, C), randomised from ``stream``'s uniforms when asked."""
        logits = check_logits(logits)
        probs = torch.softmax(logits.to(torch.float64), dim=1)
        uniforms = None
        if self.randomized and self.score != "lac":
            uniforms = conformal_uniforms(logits.shape[0], self.seed, stream, logits.device)
        return class_scores(probs, self.score, uniforms, lam=self.lam, k_reg=self.k_reg)

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> Self:
        """Learn ``threshold_`` from calibration logits (N, C) and labels (N,)."""
        logits = check_logits(logits)
        labels = check_labels(labels, logits.shape[0], logits.shape[1], logits.device)
        true_scores = self.scores(logits, "calibration").gather(1, labels[:, None]).squeeze(1)
        self.threshold_ = conformal_threshold(true_scores, self.alpha)
        self.n_calibration_ = logits.shape[0]
        return self

    def predict_sets(self, logits: ArrayLike, stream: str = "test") -> Tensor:
        """Boolean prediction sets (N, C): class ``c`` is in the set of row ``i`` iff its score is ``<= threshold_``.

        ``stream`` names the draw of uniforms (use a different name per evaluated split).
        """
        _require_fitted(self, "threshold_")
        return self.scores(logits, stream) <= self.threshold_

    def evaluate(self, logits: ArrayLike, labels: ArrayLike, stream: str = "test") -> SetMetrics:
        """Coverage and mean set size of the sets of ``logits`` against ``labels``."""
        sets = self.predict_sets(logits, stream)
        return SetMetrics.of(sets, check_labels(labels, sets.shape[0], sets.shape[1], sets.device))
