"""The run's post-hoc suite: every variant is the calibrator's own output, evaluated by the given report."""

import json

import torch

from calprompt.calibration.conformal import SplitConformal
from calprompt.calibration.posthoc import ZeroShotLogitScaling
from calprompt.calibration.procal import DensityRatioCalibration, ProximityIsotonicRegression
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

    def report(logits, labels, proximity=None):
        return evaluate(logits, labels, proximity=proximity).to_dict()

    out = posthoc_suite(report, val=val, base=base, novel=novel, alpha=0.2, seed=3)
    json.dumps(out, allow_nan=False)
    for split in ("base", "novel"):
        for key in ("sals", "histogram", "isotonic", "multi_isotonic"):
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
    out = posthoc_suite(lambda z, y, p: evaluate(z, y).to_dict(), val=None, base=base)
    assert out == {"posthoc": {}}


def test_suite_fits_procal_on_the_validation_proximity_and_reports_piece():
    generator = torch.Generator().manual_seed(7)
    val, base, novel = _scored(0, 80, 6, zs=False), _scored(1, 200, 6), _scored(2, 150, 5)
    val, base, novel = (
        Scored(s.logits, s.labels, s.zs_logits, torch.rand(s.labels.shape[0], generator=generator, dtype=torch.float64))
        for s in (val, base, novel)
    )

    def report(logits, labels, proximity=None):
        return evaluate(logits, labels, proximity=proximity).to_dict()

    out = posthoc_suite(report, val=val, base=base, novel=novel)
    density = DensityRatioCalibration().fit(val.logits, val.labels, val.proximity)
    expected = report(density.transform(novel.logits, novel.proximity), novel.labels, novel.proximity)
    assert out["novel+procal_density"] == expected and expected["piece"] is not None
    binned = ProximityIsotonicRegression().fit(val.logits, val.labels, val.proximity)
    assert out["base+procal_isotonic"] == report(
        binned.transform(base.logits, base.proximity), base.labels, base.proximity
    )
    assert out["posthoc"]["procal_density"] == {"transfers_to_novel": True, "preserves_top1": False}
    assert "multi_isotonic" in out["posthoc"] and "skipped" not in out
    # a validation split without errors: the density-ratio variant is skipped with the reason, the rest still run
    spread = 5 + torch.rand(val.labels.shape[0], 1, generator=generator)  # distinct confidences, all right
    perfect = Scored(spread * torch.eye(6)[val.labels], val.labels, None, val.proximity)
    out = posthoc_suite(report, val=perfect, base=base, novel=novel)
    assert "0 wrongly classified" in out["skipped"]["procal_density"]
    assert "base+procal_density" not in out and "base+procal_isotonic" in out
