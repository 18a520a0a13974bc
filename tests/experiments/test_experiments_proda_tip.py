"""ProDA, Tip-Adapter and Tip-Adapter-F end to end through `calprompt train` and `calprompt eval` on the toy world."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from calprompt.cli import app


def _train(weights: str, out, method: str, calibration: str, *extra: str):
    args = ["train", "--dataset", "toy", "--method", method, "--shots", "2", "--pretrained", weights]
    args += ["--recipe", "fast", "--calibration", calibration, "--quiet", "--out", str(out), *extra]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("calibration", ["none", "ours"])
def test_proda_trains_and_evaluates_base_and_novel(toy_weights, tmp_path, cache_env, calibration):
    result = _train(toy_weights, tmp_path / "run", "proda", calibration, "--epochs", "2", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["base"]["n_classes"] == metrics["novel"]["n_classes"] == 24
    losses = metrics["train"]["final_loss"]
    assert {"prompt_distribution", "prompt_orthogonality"} <= set(losses)  # ProDA's own terms beside the objective's
    prompts = load_file(str(tmp_path / "run" / "prompt.safetensors"))
    assert list(prompts) == ["ctx"] and prompts["ctx"].shape == (32, 16, 64)


def test_tip_adapter_is_built_without_training_and_reloads_from_its_run(toy_weights, tmp_path, cache_env):
    """0 epochs (its recipe), the cache from the 2-shot training set, saved with the run; `ours` has nothing to
    train, so it gives the same numbers as `none`."""
    runs = {}
    for calibration in ("none", "ours"):
        out = tmp_path / calibration
        result = _train(toy_weights, out, "tip_adapter", calibration, "--protocol", "all")
        assert result.exit_code == 0, result.output
        assert json.loads((out / "config.json").read_text())["epochs"] == 0
        runs[calibration] = json.loads((out / "metrics.json").read_text())
        cache = load_file(str(out / "prompt.safetensors"))
        assert cache["cache_keys"].shape == (48 * 2, 64) and cache["cache_values"].shape == (96, 48)
        assert cache["cache_values"].sum(0).tolist() == [2.0] * 48  # one-hot: two shots of every class
    assert runs["none"]["base"] == runs["ours"]["base"]
    result = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "none" / "metrics.json").read_text())
    assert again["base"]["accuracy"] == pytest.approx(runs["none"]["base"]["accuracy"])


@pytest.mark.parametrize("calibration", ["none", "ours"])
def test_tip_adapter_f_learns_its_keys(toy_weights, tmp_path, cache_env, calibration):
    out = tmp_path / "run"
    result = _train(toy_weights, out, "tip_adapter_f", calibration, "--protocol", "all", "--epochs", "2")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["base"]["n_classes"] == 48 and "novel" not in metrics
    assert load_file(str(out / "prompt.safetensors"))["cache_keys"].shape == (96, 64)
