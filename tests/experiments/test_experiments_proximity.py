"""A run's metrics.json carries the multi-isotonic and ProCal variants and PIECE, all from one proximity per image."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from calprompt.calibration.procal import DensityRatioCalibration
from calprompt.experiments.config import RunConfig
from calprompt.experiments.runner import run_experiment
from calprompt.metrics import evaluate


@pytest.fixture(scope="module")
def backbone(toy_weights):
    from calprompt.clip import load_clip

    return load_clip("toy", toy_weights)


def test_a_run_reports_procal_multi_isotonic_and_piece_from_its_own_proximity(
    tmp_path, backbone, toy_weights, shared_cache
):
    config = RunConfig(method="zeroshot", shots=2, epochs=0, warmup_epochs=0, pretrained=toy_weights)
    out = tmp_path / "run"
    metrics = run_experiment(config, out, backbone=backbone, cache_dir=shared_cache).metrics
    stored = load_file(str(out / "predictions.safetensors"))
    assert metrics["proximity_k"] == 5
    for split in ("base", "novel"):
        near = stored[f"{split}/proximity"].double()
        expected = evaluate(stored[f"{split}/logits"], stored[f"{split}/labels"], proximity=near)
        assert metrics[split]["piece"] == pytest.approx(expected.piece, abs=1e-12)
        assert metrics[f"{split}+multi_isotonic"]["piece"] is not None
        assert f"{split}+procal_isotonic" in metrics
    for key in ("multi_isotonic", "procal_isotonic", "procal_density"):
        assert key in metrics["posthoc"] or key in metrics.get("skipped", {})
    if "procal_density" in metrics["posthoc"]:
        val_near = stored["base_val/proximity"].double()
        density = DensityRatioCalibration().fit(stored["base_val/logits"], stored["base_val/labels"], val_near)
        calibrated = density.transform(stored["novel/logits"], stored["novel/proximity"].double())
        expected = evaluate(calibrated, stored["novel/labels"], proximity=stored["novel/proximity"].double())
        assert metrics["novel+procal_density"]["ece"] == pytest.approx(expected.ece, abs=1e-6)
    assert torch.all((stored["base/proximity"] > 0) & (stored["base/proximity"] <= 1))
