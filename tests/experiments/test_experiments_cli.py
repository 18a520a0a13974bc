"""End to end through the command line on the toy world (a random-init toy checkpoint: no shipped model needed)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from calprompt.cli import app
from calprompt.metrics import EvaluationReport


def _train_args(weights: str, out, *extra: str) -> list[str]:
    return [
        "train",
        "--dataset",
        "toy",
        "--method",
        "coop",
        "--shots",
        "2",
        "--pretrained",
        weights,
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize("calibration", ["none", "ours"])
def test_train_writes_metrics_for_base_and_novel(toy_weights, tmp_path, cache_env, calibration):
    result = CliRunner().invoke(app, _train_args(toy_weights, tmp_path / "run", "--calibration", calibration))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for split in ("base", "novel", "base+ts", "novel+ts", "novel+dac"):
        report = EvaluationReport.from_dict(metrics[split])
        assert report.n == 24 * 50 and report.n_classes == 24  # toy: 48 classes, 50 test images each
        assert 0.0 <= report.accuracy <= 1.0 and 0.0 <= report.ece <= 1.0
    assert "base" in result.output and "novel" in result.output and "ECE" in result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["calibration"] == calibration and config["epochs"] == 3
    prompts = load_file(str(tmp_path / "run" / "prompt.safetensors"))
    assert list(prompts) == ["ctx"] and prompts["ctx"].shape == (4, 64)

    # re-evaluating from the saved prompts reproduces the numbers; another dataset gets its own entry
    result = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["base"]["accuracy"] == pytest.approx(metrics["base"]["accuracy"])
    assert again["novel"]["ece"] == pytest.approx(metrics["novel"]["ece"])
    result = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "run"), "--dataset", "toy-domain"])
    assert result.exit_code == 0, result.output
    shifted = json.loads((tmp_path / "run" / "evaluations.json").read_text())["eval:toy-domain"]
    assert shifted["dataset"] == "toy-domain" and shifted["report"]["n_classes"] == 48


# ProGrad: its own update rule resumes exactly too; CLAP: its multipliers are method state set before training; ProDA:
# its per-step prompt batches; Tip-Adapter-F: its cache (built when training starts) and learned keys. The
# class-specific ones run under protocol all (they name only their training classes).
@pytest.mark.parametrize("method", ["coop", "prograd", "clap", "proda", "tip_adapter_f"])
def test_killed_run_resumes_to_the_same_prompts(toy_weights, tmp_path, cache_env, method):
    """SIGKILL after the first epoch's checkpoint, start again: the final prompts equal an uninterrupted run's."""
    extra = ("--protocol", "all") if method in ("clap", "tip_adapter_f") else ()
    # No bootstrap intervals: they are most of a tiny run's time and nothing this checks.
    extra += ("--bootstrap", "0")
    command = [sys.executable, "-m", "calprompt.cli", *_train_args(toy_weights, tmp_path / "cut", *extra)]
    command[command.index("3")] = "6"  # more epochs, so that the kill lands mid-run
    command[command.index("coop")] = method
    full = [str(tmp_path / "full") if arg == str(tmp_path / "cut") else arg for arg in command]
    # The uninterrupted run goes on beside the one to be killed (same settings, its own directory).
    uninterrupted_run = subprocess.Popen(full, env=cache_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process = subprocess.Popen(command, env=cache_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "cut" / "checkpoint" / "checkpoint.json"
    deadline = time.time() + 600  # generous for a loaded machine: the loop ends as soon as the checkpoint exists
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    epoch_at_kill = json.loads(checkpoint.read_text())["epoch"]
    assert epoch_at_kill < 5 and not (tmp_path / "cut" / "metrics.json").exists()

    subprocess.run(command, env=cache_env, check=True, capture_output=True)
    assert uninterrupted_run.wait() == 0, uninterrupted_run.stderr.read().decode()[-2000:]
    resumed = load_file(str(tmp_path / "cut" / "prompt.safetensors"))
    uninterrupted = load_file(str(tmp_path / "full" / "prompt.safetensors"))
    expected = {"tip_adapter_f": {"cache_keys", "cache_values"}, "clap": {"prototypes"}}.get(method, {"ctx"})
    assert resumed.keys() == uninterrupted.keys() == expected
    for key in expected:
        assert torch.equal(resumed[key], uninterrupted[key]), key


def test_bad_option_is_a_clear_error(toy_weights, tmp_path, cache_env):
    result = CliRunner().invoke(app, _train_args(toy_weights, tmp_path / "x", "--method-option", "n_ctx"))
    assert result.exit_code != 0 and "KEY=VALUE" in result.output
    result = CliRunner().invoke(app, _train_args(toy_weights, tmp_path / "x", "--calibration", "nope"))
    assert result.exit_code == 1 and "ours" in result.output and "Traceback" not in result.output
