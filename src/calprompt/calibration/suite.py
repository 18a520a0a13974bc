"""The post-hoc part of a run's ``metrics.json`` beyond TS and DAC: SaLS, histogram binning, isotonic regression,
multi-class isotonic regression, ProCal's two calibrators (with each split's kNN proximity) and split conformal sets,
each fitted on the few-shot base validation split and reported on base and novel test.

One function, :func:`posthoc_suite`, so that the run only hands over its logits; every calibrator's declarations
(``transfers_to_novel``, ``preserves_top1``) are stored with its numbers, and every reported split names which
calibrator produced it (``"base+sals"``, ``"novel+isotonic"``...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from calprompt.calibration.conformal import SCORES, SplitConformal
from calprompt.calibration.posthoc import ZeroShotLogitScaling
from calprompt.calibration.procal import (
    DensityRatioCalibration,
    ProximityIsotonicRegression,
    density_ratio_unfit_reason,
)
from calprompt.calibration.recalibration import (
    HistogramBinning,
    IsotonicCalibration,
    MultiIsotonicRegression,
    _top_label,
)

#: The run's default miscoverage of its conformal sets (90 % target coverage).
DEFAULT_MISCOVERAGE = 0.1
#: Bootstrap resamples behind the intervals of a run's main splits (raw base and novel test).
RUN_BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class Scored:
    """Logits (N, C) and labels (N,) of one split, the zero-shot logits of the same images and each image's proximity
    to the base validation images (:mod:`calprompt.calibration.proximity`), each or ``None``."""

    logits: Tensor
    labels: Tensor
    zs_logits: Tensor | None = None
    proximity: Tensor | None = None


def _declared(calibrator: object) -> dict[str, bool]:
    return {"transfers_to_novel": calibrator.transfers_to_novel, "preserves_top1": calibrator.preserves_top1}


def posthoc_suite(
    report: Callable[[Tensor, Tensor, Tensor | None], dict[str, Any]],
    *,
    val: Scored | None,
    base: Scored,
    novel: Scored | None = None,
    alpha: float = DEFAULT_MISCOVERAGE,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of the SaLS, binning, isotonic, multi-isotonic and ProCal variants, plus conformal coverage, keyed for
    ``metrics.json``.

    ``report(logits, labels, proximity)`` builds one split's metrics (the run's ``evaluate(...).to_dict()``). SaLS needs
    the splits' zero-shot logits and no fitting; the rest need ``val`` and are skipped without it; ProCal needs every
    split's proximity, and its density-ratio variant a validation split with both right and wrong predictions (else
    ``"skipped"`` says why). ``"posthoc"`` lists what each calibrator declares; ``"conformal"`` holds, per score, the
    threshold and the coverage / mean set size / fraction of empty sets on base and novel test at miscoverage ``alpha``
    (RAPS/APS randomised from ``seed``).
    """
    splits = {"base": base, **({"novel": novel} if novel is not None else {})}
    out: dict[str, Any] = {"posthoc": {}}
    sals = ZeroShotLogitScaling()
    if all(split.zs_logits is not None for split in splits.values()):
        out["posthoc"]["sals"] = _declared(sals)
        for name, split in splits.items():
            out[f"{name}+sals"] = report(sals.transform(split.logits, split.zs_logits), split.labels, split.proximity)
    if val is None:
        return out
    fitted = (HistogramBinning(), IsotonicCalibration(), MultiIsotonicRegression())
    for key, calibrator in zip(("histogram", "isotonic", "multi_isotonic"), fitted, strict=True):
        calibrator.fit(val.logits, val.labels)
        out["posthoc"][key] = _declared(calibrator)
        for name, split in splits.items():
            out[f"{name}+{key}"] = report(calibrator.transform(split.logits), split.labels, split.proximity)
    procal = _procal(report, val, splits)
    out["posthoc"].update(procal.pop("posthoc", {}))
    out.update(procal)
    conformal: dict[str, Any] = {"alpha": alpha, "n_calibration": int(val.labels.shape[0])}
    for score in SCORES:
        predictor = SplitConformal(score, alpha, seed=seed).fit(val.logits, val.labels)
        # an infinite threshold (too few calibration samples for 1 - alpha) is stored as None: JSON has no inf
        conformal[score] = {"threshold": None if math.isinf(predictor.threshold_) else predictor.threshold_}
        for name, split in splits.items():
            conformal[score][name] = asdict(predictor.evaluate(split.logits, split.labels, stream=name))
    out["conformal"] = conformal
    return out


def _procal(report: Callable, val: Scored, splits: dict[str, Scored]) -> dict[str, Any]:
    """ProCal's two variants on every split, when the validation split and every split have proximities."""
    if val.proximity is None or any(split.proximity is None for split in splits.values()):
        return {}
    out: dict[str, Any] = {"posthoc": {}}
    procal = {"procal_isotonic": ProximityIsotonicRegression()}
    _, confidence, correct = _top_label(val.logits, val.labels)
    reason = density_ratio_unfit_reason(correct.bool(), torch.stack([confidence, val.proximity.double()], dim=1))
    if reason:
        out["skipped"] = {"procal_density": f"ProCal's density-ratio calibrator not fitted: {reason}"}
    else:
        procal["procal_density"] = DensityRatioCalibration()
    for key, calibrator in procal.items():
        calibrator.fit(val.logits, val.labels, val.proximity)
        out["posthoc"][key] = _declared(calibrator)
        for name, split in splits.items():
            out[f"{name}+{key}"] = report(
                calibrator.transform(split.logits, split.proximity), split.labels, split.proximity
            )
    return out
