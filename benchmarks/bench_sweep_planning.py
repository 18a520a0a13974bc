"""Planning a sweep of 100 runs of which 95 are finished in the store: how long before the first run starts.

The 95 finished runs are written with the store's own protocol (identity, result files, finished marker) but without
training, so the benchmark takes seconds; planning then validates all 100 configs, checks the identity (config, data
fingerprint, weights) and the finished marker of every stored run, and finds the 5 to run. Target: under 2 s.

Usage: python benchmarks/bench_sweep_planning.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from safetensors.torch import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from calprompt._io import write_json_atomic
from calprompt.experiments.rundir import (
    CONFIG_FILE,
    METHOD_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PROMPT_FILE,
    claim,
    mark_finished,
)
from calprompt.experiments.store import ResultsStore
from calprompt.experiments.sweep import SweepSpec, plan_sweep

# 2 datasets x 5 calibrations x 5 seeds x 2 shot counts = 100 runs
SWEEP = {
    "name": "planning-benchmark",
    "base": {"method": "coop", "recipe": "fast"},
    "matrix": {
        "dataset": ["toy", "toy-texture"],
        "calibration": ["none", "ours", "mbls", "zs-norm", "penalty"],
        "seed": [1, 2, 3, 4, 5],
        "shots": [2, 4],
    },
}


def fake_finished(store: ResultsStore, run) -> None:
    """A finished run directory as `run_experiment` leaves it, without the training."""
    folder = run.run_dir
    identity = store.identity(run.config)
    claim(folder, identity)
    write_json_atomic(folder / CONFIG_FILE, {**run.config.to_dict(), "run_id": run.run_id})
    write_json_atomic(folder / METRICS_FILE, {"base": {}, "novel": {}})
    write_json_atomic(folder / METHOD_FILE, {"name": run.config.method})
    for name in (PROMPT_FILE, PREDICTIONS_FILE):
        save_file({}, str(folder / name))
    mark_finished(folder, identity, (CONFIG_FILE, METHOD_FILE, METRICS_FILE, PROMPT_FILE, PREDICTIONS_FILE))


def main() -> None:
    spec = SweepSpec.from_dict(SWEEP, "benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / "store")
        plan = plan_sweep(spec, store)
        for run in plan.runs[:95]:
            fake_finished(store, run)
        started = time.perf_counter()
        plan = plan_sweep(spec, ResultsStore(store.root))  # a fresh store object: no fingerprint memo
        seconds = time.perf_counter() - started
        again = time.perf_counter()
        plan_sweep(spec, store)  # the same store object: data fingerprints already computed
        warm = time.perf_counter() - again
    print(f"planned {len(plan.runs)} runs: {len(plan.finished)} finished, {len(plan.pending)} to run")
    print(f"planning time: {seconds:.3f} s (target < 2 s); with fingerprints memoised: {warm:.3f} s")


if __name__ == "__main__":
    main()
