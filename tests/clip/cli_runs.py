"""One `calprompt train` run on a small folder dataset, as the backbone-family tests run it."""

from __future__ import annotations

import json


def train_on_folder(backbone: str, method: str, calibration: str, tmp_path, monkeypatch) -> None:
    """Train ``method`` one epoch on a six-class image folder through the CLI; check the metrics it writes."""
    from typer.testing import CliRunner

    import calprompt.calibration.suite as suite
    from calprompt.cli import app
    from tests.experiments.fault_injection import CLASSES, make_dataset

    data = tmp_path / "data"
    if not data.exists():
        make_dataset(data)
    monkeypatch.setenv("CALPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(suite, "RUN_BOOTSTRAP_RESAMPLES", 0)  # intervals are the metrics tests' business
    out = tmp_path / f"run-{method}-{calibration}"
    args = ["train", "--dataset", "folder", "--root", str(data), "--backbone", backbone, "--method", method]
    args += ["--calibration", calibration, "--shots", "2", "--epochs", "1", "--batch-size", "4"]
    args += ["--warmup-epochs", "0", "--quiet", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (backbone, method, result.output)
    metrics = json.loads((out / "metrics.json").read_text())
    # base/novel: the first/second half of the sorted classes, 3 test images each
    assert metrics["base"]["n"] == 3 * len(CLASSES) // 2 and metrics["novel"]["n_classes"] == len(CLASSES) // 2
