"""Post-hoc calibrators of logits in scikit-learn style: temperature scaling, DAC and SaLS.

All three leave every prediction unchanged (they rescale each row of logits by a positive factor, or map it affinely
with a positive slope) and return tensors on the input's device. TS and DAC stack in either order, since scaling by
``1 / T`` and by a per-sample ``w`` commute: ``dac.transform(ts.transform(logits), zs_text, tuned_text)``.
DAC: Wang et al., 2024; SaLS: Murugesan et al., 2024.

Every calibrator declares two facts as class attributes, read by the run's post-hoc suite
(:mod:`calprompt.calibration.suite`): ``transfers_to_novel`` (whether it applies to classes it was not fitted on) and
``preserves_top1`` (whether its output always has the input's argmax). The top-label recalibrators (histogram binning,
isotonic regression) live in :mod:`calprompt.calibration.recalibration`.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import check_non_negative, check_positive_int, fail
from calprompt.calibration.baselines import zs_norm_logits
from calprompt.metrics.checks import ArrayLike, check_labels, check_logits, check_matrix


class NotFittedError(RuntimeError):
    """A calibrator was used before ``fit``."""


def _require_fitted(estimator: object, attribute: str) -> None:
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"This {type(estimator).__name__} is not fitted yet: call `fit(...)` before `transform`.")


def _separable(scores: Tensor, labels: Tensor) -> bool:
    """Whether every sample's true-class score strictly beats all others (then NLL has no finite minimiser in T)."""
    true_score = scores.gather(1, labels[:, None])  # (N, 1)
    rival = scores.scatter(1, labels[:, None], float("-inf")).amax(dim=1, keepdim=True)
    return bool((true_score > rival).all())


def fit_temperature(logits: Tensor, labels: Tensor, init_temperature: float = 1.0, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (L-BFGS on ``log T``, float64).

    Optimising ``log T`` keeps ``T`` positive without constraints. Warns when the validation logits classify every
    sample correctly: NLL then keeps falling as ``T -> 0`` and the result is merely where L-BFGS stopped.
    """
    if _separable(logits, labels):
        warnings.warn(
            "Every validation sample is classified correctly, so the NLL has no finite minimiser in T and the fitted "
            "temperature only reflects where L-BFGS stopped. Fit temperature scaling on held-out samples with errors.",
            RuntimeWarning,
            stacklevel=3,
        )
    # inference_mode(False) + clone(): autograd works even if the caller (or the logits) used torch.inference_mode().
    with torch.inference_mode(False), torch.enable_grad():
        scores = logits.detach().to(torch.float64).clone()
        log_t = torch.tensor(math.log(init_temperature), dtype=torch.float64, device=scores.device, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [log_t],
            lr=1.0,
            max_iter=max_iter,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
        )

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(scores * torch.exp(-log_t), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
    return math.exp(log_t.item())


#: The temperatures a fit may end at and still be used. CLIP's logits are ``logit_scale`` (100) times a cosine in
#: [-1, 1]: beyond T = 100 they are divided below the cosine scale itself, within a factor ``e**2`` of uniform
#: probabilities, and below T = 0.01 the smallest cosine gap that matters is blown up ten-thousandfold. A fit outside
#: these bounds is the flat end of an NLL without a finite minimiser in reach (validation logits near chance, all
#: wrong, or all right), not a calibration, so the run falls back to T = 1 and records why.
TEMPERATURE_BOUNDS = (0.01, 100.0)


def degenerate_temperature(logits: Tensor, labels: Tensor, fitted: float, bounds: tuple[float, float]) -> str | None:
    """Why a fitted temperature must not be used, or None. The NLL is convex in ``1 / T``, with slope
    ``mean(mean_c z_c - z_y)`` at ``1 / T = 0``: when the true class's logit is on average no higher than the row's
    mean, the minimum is at ``T = inf`` whatever the optimiser returned."""
    scores = logits.to(torch.float64)
    margin = (scores.gather(1, labels[:, None]).squeeze(1) - scores.mean(dim=1)).mean().item()
    if margin <= 0:
        return (
            "the validation logits rank the true class no higher than average (near chance or all wrong), so the "
            "NLL keeps falling as T grows (no finite optimum)"
        )
    if not bounds[0] <= fitted <= bounds[1]:
        return f"the fitted T {fitted:.4g} is outside [{bounds[0]:g}, {bounds[1]:g}] (no finite optimum in reach)"
    return None


class TemperatureScaling:
    """Temperature scaling (Guo et al., 2017): ``transform(z) = z / T`` with one ``T`` fitted by minimising NLL.

    Fit it on the few-shot validation split of the base classes and apply it to any logits (base or novel). A
    degenerate fit (`degenerate_temperature`: no finite optimum, or T outside ``bounds``) is not used: ``T = 1`` (no
    scaling) instead, with the reason in ``degenerate_``; ``bounds=None`` uses any fit.

    Attributes:
        temperature_: the temperature ``transform`` divides by (float > 0); present only after ``fit``.
        fitted_temperature_: where the NLL fit ended (equal to ``temperature_`` unless the fit was degenerate).
        degenerate_: why the fit was not used (str), or None.
    """

    transfers_to_novel: ClassVar[bool] = True  # one scalar, class-agnostic
    preserves_top1: ClassVar[bool] = True

    def __init__(
        self,
        init_temperature: float = 1.0,
        max_iter: int = 100,
        bounds: tuple[float, float] | None = TEMPERATURE_BOUNDS,
    ) -> None:
        if check_non_negative(init_temperature, "init_temperature") == 0:
            fail("init_temperature", "a number > 0", init_temperature)
        self.init_temperature = float(init_temperature)
        self.max_iter = check_positive_int(max_iter, "max_iter")
        if bounds is not None and not (len(bounds) == 2 and 0 < bounds[0] < bounds[1] < math.inf):
            fail("bounds", "(low, high) with 0 < low < high < inf, or None", bounds)
        self.bounds = bounds

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> Self:
        """Learn ``temperature_`` from validation logits (N, C) and labels (N,)."""
        logits = check_logits(logits)
        labels = check_labels(labels, logits.shape[0], logits.shape[1], logits.device)
        self.fitted_temperature_ = fit_temperature(logits, labels, self.init_temperature, self.max_iter)
        self.degenerate_ = None
        if self.bounds is not None:
            self.degenerate_ = degenerate_temperature(logits, labels, self.fitted_temperature_, self.bounds)
        self.temperature_ = 1.0 if self.degenerate_ else self.fitted_temperature_
        return self

    def transform(self, logits: ArrayLike) -> Tensor:
        """Return ``logits / temperature_`` (same dtype and device as the input; argmax unchanged)."""
        _require_fitted(self, "temperature_")
        return check_logits(logits) / self.temperature_

    def fit_transform(self, logits: ArrayLike, labels: ArrayLike) -> Tensor:
        return self.fit(logits, labels).transform(logits)


def _nearest_distances(features: Tensor, base: Tensor, k: int) -> Tensor:
    """The ``k`` smallest Euclidean distances (C, k), ascending, from normalised ``features`` to the ``base`` rows."""
    normalised = F.normalize(features.to(torch.float64), dim=1)
    return torch.cdist(normalised, base.to(normalised.device)).topk(k, dim=1, largest=False).values


class DistanceAwareCalibration:
    """Distance-aware calibration (DAC) of logits for classes unseen while tuning.

    For a test class ``c`` with L2-normalised zero-shot text feature ``t0_c`` and tuned text feature ``t_c``:

        d_zs(c) = mean of the k smallest ||t0_c - t0_b|| over base classes b
        d_ft(c) = mean of the k smallest ||t_c - t_b|| over base classes b
        w(c)    = exp(d_zs(c) - d_ft(c)),  or 1 if min_b ||t_c - t_b|| < base_threshold (c is a base class)

    and each sample's logits are multiplied by ``w(argmax z)``. Tuned features that drifted farther from the base
    classes than their zero-shot counterparts get ``w < 1`` (softer predictions); predictions never change.

    Attributes:
        base_zs_text_, base_tuned_text_: normalised base-class features (C_base, D); present only after ``fit``.
    """

    transfers_to_novel: ClassVar[bool] = True  # built for them: the identity on base classes
    preserves_top1: ClassVar[bool] = True

    def __init__(self, k: int = 5, base_threshold: float = 0.05) -> None:
        self.k = check_positive_int(k, "k")
        self.base_threshold = check_non_negative(base_threshold, "base_threshold")

    def fit(self, base_zs_text: ArrayLike, base_tuned_text: ArrayLike) -> Self:
        """Store the base classes' zero-shot and tuned text features, each (C_base, D); needs ``C_base >= k``."""
        zs = check_matrix(base_zs_text, "base_zs_text", "(C_base, D)")
        tuned = check_matrix(base_tuned_text, "base_tuned_text", "(C_base, D)")
        if tuned.shape != zs.shape:
            fail("base_tuned_text", f"of the same shape as `base_zs_text` {tuple(zs.shape)}", tuple(tuned.shape))
        if zs.shape[0] < self.k:
            fail("k", f"at most the number of base classes ({zs.shape[0]}); lower `k`", self.k)
        self.base_zs_text_ = F.normalize(zs.to(torch.float64), dim=1)
        self.base_tuned_text_ = F.normalize(tuned.to(torch.float64), dim=1)
        return self

    def class_weights(self, zs_text: ArrayLike, tuned_text: ArrayLike) -> Tensor:
        """The float64 weight ``w(c)`` (C,) of each test class from its zero-shot and tuned text features (C, D)."""
        _require_fitted(self, "base_zs_text_")
        zs = check_matrix(zs_text, "zs_text", "(C, D)")
        tuned = check_matrix(tuned_text, "tuned_text", "(C, D)")
        if tuned.shape != zs.shape:
            fail("tuned_text", f"of the same shape as `zs_text` {tuple(zs.shape)}", tuple(tuned.shape))
        width = self.base_zs_text_.shape[1]
        if zs.shape[1] != width:
            fail("zs_text", f"features of dimension {width} (as fitted)", f"dimension {zs.shape[1]}")
        near_zs = _nearest_distances(zs, self.base_zs_text_, self.k)  # (C, k)
        near_ft = _nearest_distances(tuned, self.base_tuned_text_, self.k)
        weights = torch.exp(near_zs.mean(dim=1) - near_ft.mean(dim=1))
        return torch.where(near_ft[:, 0] < self.base_threshold, torch.ones_like(weights), weights)

    def transform(self, logits: ArrayLike, zs_text: ArrayLike, tuned_text: ArrayLike) -> Tensor:
        """Scale each row of ``logits`` (N, C) by the weight of its predicted class; same dtype and device."""
        logits = check_logits(logits)
        weights = self.class_weights(zs_text, tuned_text).to(logits.device)
        if weights.shape[0] != logits.shape[1]:
            fail("logits", f"of shape (N, {weights.shape[0]}), one column per class of `zs_text`", tuple(logits.shape))
        return logits * weights[logits.argmax(dim=1)][:, None].to(logits.dtype)


class ZeroShotLogitScaling:
    """SaLS (Murugesan et al., 2024, "Robust calibration of large vision-language adapters"): at test time, map each
    row of tuned logits affinely onto the zero-shot logit range of the same image.

    ``transform(z, z0)_ij = min_k z0_ik + (z_ij - min_k z_ik) / (max_k z_ik - min_k z_ik) * range_k z0_ik``
    (``range_k`` = max minus min over the row):
    the ZS-Norm rescaling (:func:`~calprompt.calibration.baselines.zs_norm_logits`) used as a post-hoc calibrator. It
    learns nothing, so there is no ``fit``; it needs the frozen CLIP's zero-shot logits ``z0`` of the same images
    (``logit_scale * image_features @ zs_text.T``), available for any class list, base or novel. The slope is
    positive, so the argmax is kept (the row maximum maps exactly to ``max_k z0_ik``).
    """

    transfers_to_novel: ClassVar[bool] = True
    preserves_top1: ClassVar[bool] = True

    def transform(self, logits: ArrayLike, zs_logits: ArrayLike) -> Tensor:
        """Rescaled logits (N, C) in the input's dtype (computed in float32, or float64 for float64 input)."""
        logits = check_logits(logits)
        zs_logits = check_logits(zs_logits, "zs_logits")
        if zs_logits.shape != logits.shape:
            fail("zs_logits", f"of the same shape as `logits` {tuple(logits.shape)}", tuple(zs_logits.shape))
        return zs_norm_logits(logits, zs_logits.to(logits.device)).to(logits.dtype)
