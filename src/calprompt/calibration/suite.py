"""The post-hoc part of a run's ``metrics.json`` beyond TS and DAC: SaLS, histogram binning, isotonic regression and
split conformal sets, each fitted on the few-shot base validation split and reported on base and novel test.

One function, :func:`posthoc_suite`, so that the run only hands over its logits; every calibrator's declarations
(``transfers_to_novel``, ``preserves_top1``) are stored with its numbers, and every reported split names which
calibrator produced it (``"base+sals"``, ``"novel+isotonic"``...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from calprompt.calibration.conformal import SCORES, SplitConformal
from calprompt.calibration.posthoc import ZeroShotLogitScaling
from calprompt.calibration.recalibration import HistogramBinning, IsotonicCalibration

#: The run's default miscoverage of its conformal sets (90 % target coverage).
DEFAULT_MISCOVERAGE = 0.1
#: Bootstrap resamples behind the intervals of a run's main splits (raw base and novel test).
RUN_BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class Scored:
    """Logits (N, C) and labels (N,) of one split, and the zero-shot logits of the same images (or ``None``)."""

    logits: Tensor
    labels: Tensor
    zs_logits: Tensor | None = None


def _declared(calibrator: object) -> dict[str, bool]:
    return {"transfers_to_novel": calibrator.transfers_to_novel, "preserves_top1": calibrator.preserves_top1}


def posthoc_suite(
    report: Callable[[Tensor, Tensor], dict[str, Any]],
    *,
    val: Scored | None,
    base: Scored,
    novel: Scored | None = None,
    alpha: float = DEFAULT_MISCOVERAGE,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of SaLS, histogram binning and isotonic variants, plus conformal coverage, keyed for ``metrics.json``.

    ``report(logits, labels)`` builds one split's metrics (the run's ``evaluate(...).to_dict()``). SaLS needs the
    splits' zero-shot logits and no fitting; the rest need ``val`` and are skipped without it. ``"posthoc"`` lists
    what each calibrator declares; ``"conformal"`` holds, per score, the threshold and the coverage / mean set size /
    fraction of empty sets on base and novel test at miscoverage ``alpha`` (RAPS/APS randomised from ``seed``).
    """
    splits = {"base": base, **({"novel": novel} if novel is not None else {})}
    out: dict[str, Any] = {"posthoc": {}}
    sals = ZeroShotLogitScaling()
    if all(split.zs_logits is not None for split in splits.values()):
        out["posthoc"]["sals"] = _declared(sals)
        for name, split in splits.items():
            out[f"{name}+sals"] = report(sals.transform(split.logits, split.zs_logits), split.labels)
    if val is None:
        return out
    for key, calibrator in (("histogram", HistogramBinning()), ("isotonic", IsotonicCalibration())):
        calibrator.fit(val.logits, val.labels)
        out["posthoc"][key] = _declared(calibrator)
        for name, split in splits.items():
            out[f"{name}+{key}"] = report(calibrator.transform(split.logits), split.labels)
    conformal: dict[str, Any] = {"alpha": alpha, "n_calibration": int(val.labels.shape[0])}
    for score in SCORES:
        predictor = SplitConformal(score, alpha, seed=seed).fit(val.logits, val.labels)
        # an infinite threshold (too few calibration samples for 1 - alpha) is stored as None: JSON has no inf
        conformal[score] = {"threshold": None if math.isinf(predictor.threshold_) else predictor.threshold_}
        for name, split in splits.items():
            conformal[score][name] = asdict(predictor.evaluate(split.logits, split.labels, stream=name))
    out["conformal"] = conformal
    return out
