"""Post-hoc calibrators in scikit-learn style: temperature scaling and distance-aware calibration (DAC).

Both leave every prediction unchanged (they rescale logits by positive factors) and return tensors on the input's
device. They stack in either order, since scaling by ``1 / T`` and by a per-sample ``w`` commute:
``dac.transform(ts.transform(logits), zs_text, tuned_text)``. DAC: Wang et al., ICLR 2024.
"""

from __future__ import annotations

import math
import warnings
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import check_non_negative, check_positive_int, fail
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


class TemperatureScaling:
    """Temperature scaling (Guo et al., 2017): ``transform(z) = z / T`` with one ``T`` fitted by minimising NLL.

    Fit it on the few-shot validation split of the base classes and apply it to any logits (base or novel).

    Attributes:
        temperature_: the fitted temperature (float > 0); present only after ``fit``.
    """

    def __init__(self, init_temperature: float = 1.0, max_iter: int = 100) -> None:
        if check_non_negative(init_temperature, "init_temperature") == 0:
            fail("init_temperature", "a number > 0", init_temperature)
        self.init_temperature = float(init_temperature)
        self.max_iter = check_positive_int(max_iter, "max_iter")

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> Self:
        """Learn ``temperature_`` from validation logits (N, C) and labels (N,)."""
        logits = check_logits(logits)
        labels = check_labels(labels, logits.shape[0], logits.shape[1], logits.device)
        self.temperature_ = fit_temperature(logits, labels, self.init_temperature, self.max_iter)
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
