"""Issue 10, Must show 2: SIGKILL a training run and a grid at >= 20 seeded random moments each; every restart ends
with the uninterrupted results, and no run directory ever looks finished while incomplete.

The driver (`tests.experiments.fault_injection`) runs in its own interpreter and forks one child per attempt, so a
kill point costs about two seconds (a six-class image folder, four epochs, a random-init toy checkpoint).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("kind", "seed"), [("train", 0), ("grid", 1)])
def test_killed_and_restarted_runs_end_with_the_uninterrupted_results(tmp_path, toy_weights, kind, seed):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join((str(REPO / "src"), str(REPO)))}
    command = [sys.executable, "-m", "tests.experiments.fault_injection", str(tmp_path), toy_weights]
    command += ["--kind", kind, "--points", "20", "--seed", str(seed)]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["problems"] == []
    assert report["points"] == 20
    assert report["killed_mid_run"] >= 10  # delays are drawn within a run's duration: most kills land mid-run
