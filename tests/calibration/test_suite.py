"""The run's post-hoc suite: every variant is the calibrator's own output, evaluated by the given report."""

import json

import torch

from calprompt.calibration.conformal import SplitConformal
from calprompt.calibration.posthoc import ZeroShotLogitScaling
from calprompt.calibration.recalibration import IsotonicCalibration
from calprompt.calibration.suite import Scored, posthoc_suite
from calprompt.metrics import evaluate


def _scored(seed: int, n: int, n_classes: int, zs: bool = True) -> Scored:
    generator = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(n, n_classes, generator=generator)
    labels = torch.multinomial((0.5 * logits).softmax(1), 1, generator=generator).squeeze(1)
    return Scored(logits, labels, 30 + torch.randn(n, n_classes, generator=generator) if zs else None)


def test_suite_reports_every_variant_with_its_declarations():
    val, base, novel = _scored(0, 80, 6, zs=False), _scored(1, 300, 6), _scored(2, 300, 5)

    def report(logits, labels):
        return evaluate(logits, labels).to_dict()

    out = posthoc_suite(report, val=val, base=base, novel=novel, alpha=0.2, seed=3)
    json.dumps(out, allow_nan=False)
    for split in ("base", "novel"):
        for key in ("sals", "histogram", "isotonic"):
            assert f"{split}+{key}" in out
    assert out["novel+sals"] == report(ZeroShotLogitScaling().transform(novel.logits, novel.zs_logits), novel.labels)
    isotonic = IsotonicCalibration().fit(val.logits, val.labels)
    assert out["base+isotonic"] == report(isotonic.transform(base.logits), base.labels)
    assert out["posthoc"]["sals"] == {"transfers_to_novel": True, "preserves_top1": True}
    assert out["posthoc"]["histogram"]["preserves_top1"] is False
    raps = SplitConformal("raps", 0.2, seed=3).fit(val.logits, val.labels)
    assert out["conformal"]["raps"]["threshold"] == raps.threshold_
    assert out["conformal"]["raps"]["novel"]["coverage"] == raps.evaluate(novel.logits, novel.labels, "novel").coverage
    assert out["conformal"]["alpha"] == 0.2 and out["conformal"]["n_calibration"] == 80


def test_suite_without_validation_or_zero_shot_logits_reports_only_what_it_can():
    base = _scored(1, 100, 4, zs=False)
    out = posthoc_suite(lambda z, y: evaluate(z, y).to_dict(), val=None, base=base)
    assert out == {"posthoc": {}}
