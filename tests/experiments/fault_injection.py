"""Fault injection: SIGKILL a training run (or a grid of runs) at seeded random moments, restart, compare.

Run as ``python -m tests.experiments.fault_injection WORKDIR WEIGHTS --kind train|grid|test-time --points N
--seed S``. The driver imports calprompt once and forks one child per attempt (so a kill point costs no interpreter
start-up); the parent computes nothing with torch, so forking is safe. For each point it

1. starts the job into a fresh directory and SIGKILLs it after a random delay in [0, 1.1 x the job's duration with
   a warm feature cache],
2. checks every run directory: one that looks finished must hold exactly the uninterrupted run's results,
3. restarts the job to completion and checks that every run equals the uninterrupted one.

It prints one JSON line: the points, how many kills landed mid-run, and every mismatch found (none expected).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLASSES = tuple(f"red_{shape}" for shape in ("circle", "square", "triangle", "cross", "star", "ring"))
TIMING_KEYS = {"seconds"}


def make_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in CLASSES:
        for split, count in (("train", 2), ("val", 1), ("test", 3)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def job(kind: str, out: Path, data: Path, weights: str, cache: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from calprompt.experiments.config import RunConfig

    config = RunConfig(
        dataset="folder", backbone="toy", root=str(data), shots=2, epochs=4, batch_size=2, pretrained=weights
    )
    if kind == "test-time":  # C-TPT on every test image, 4 images at a time
        from dataclasses import replace

        config = replace(config, protocol="test-time", calibration="c-tpt", tta_views=8, tta_confident=0.25)
        config = replace(config, tta_batch=4, tta_augmix=False)
    if kind in ("train", "test-time"):
        from calprompt.experiments.runner import run_experiment

        run_experiment(config, out, cache_dir=cache)
    else:
        from calprompt.experiments.sweep import grid_spec, plan_sweep, run_sweep

        os.environ["CALPROMPT_CACHE"] = str(cache)
        base = {k: v for k, v in config.to_dict().items() if k not in ("dataset", "method", "calibration", "seed")}
        run_sweep(plan_sweep(grid_spec(base, ["folder"], [("coop", "none"), ("coop", "ours")], [1]), out))


def fork_job(args: tuple[Any, ...], kill_after: float | None) -> tuple[bool, float]:
    """Run ``job(*args)`` in a forked child; SIGKILL it after ``kill_after`` s. Returns (killed mid-run, seconds)."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            job(*args)
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if kill_after is not None and time.perf_counter() - started >= kill_after:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed = True
            break
        time.sleep(0.005)
    if not killed and os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the job {args[0]} failed with status {status}")
    return killed, time.perf_counter() - started


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items() if key not in TIMING_KEYS}
    return value


def run_dirs(out: Path, kind: str) -> list[Path]:
    if kind in ("train", "test-time"):
        return [out] if out.exists() else []
    runs = out / "runs"
    return sorted(runs.iterdir()) if runs.exists() else []


def results(folder: Path) -> dict[str, Any] | None:
    """What a finished run directory holds (metrics without timings, prompt and prediction bytes), else None."""
    from calprompt.experiments.rundir import PREDICTIONS_FILE, PROMPT_FILE, read_finished

    metrics = read_finished(folder)  # raises when a finished-looking directory has a missing or changed file
    if metrics is None:
        return None
    return {
        "metrics": without_timings(metrics),
        "prompt": (folder / PROMPT_FILE).read_bytes(),
        "predictions": (folder / PREDICTIONS_FILE).read_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("weights")
    parser.add_argument("--kind", choices=("train", "grid", "test-time"), default="train")
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    work, kind = options.workdir, options.kind
    data = make_dataset(work / "data")
    cache = work / "cache"
    rng = random.Random(options.seed)

    # Imported here, before forking, so that no child pays for it; nothing is computed with torch in this process.
    import calprompt.calibration.suite
    import calprompt.clip
    import calprompt.experiments.runner
    import calprompt.experiments.sweep

    # A run's bootstrap intervals (1,000 resamples of each main split) are two thirds of these tiny runs' time and
    # nothing this checks: 20 keep the code path (and its bytes in metrics.json) at a third of the time per point.
    calprompt.calibration.suite.RUN_BOOTSTRAP_RESAMPLES = 20

    reference_dir = work / "reference"
    fork_job((kind, reference_dir, data, options.weights, cache), None)  # fills the feature cache
    _, duration = fork_job((kind, work / "warm", data, options.weights, cache), None)  # the duration of a restart
    reference = {folder.name: results(folder) for folder in run_dirs(reference_dir, kind)}
    problems: list[str] = []
    mid_run = 0
    delays = []
    for point in range(options.points):
        out = work / f"point{point}"
        delay = rng.uniform(0.0, 1.1 * duration)
        delays.append(round(delay, 3))
        killed, _ = fork_job((kind, out, data, options.weights, cache), delay)
        mid_run += killed
        for folder in run_dirs(out, kind):
            try:
                found = results(folder)
            except ValueError as error:
                problems.append(f"point {point}: {folder.name} looks finished but is not: {error}")
                continue
            name = folder.name if kind == "grid" else reference_dir.name
            if found is not None and found != reference.get(name):
                problems.append(f"point {point}: {folder.name} is finished with other results")
        fork_job((kind, out, data, options.weights, cache), None)  # restart to completion
        final = {
            (folder.name if kind == "grid" else reference_dir.name): results(folder) for folder in run_dirs(out, kind)
        }
        for name in sorted(set(final) | set(reference)):
            mine, theirs = final.get(name), reference.get(name)
            if mine != theirs:
                parts = "all" if mine is None or theirs is None else [k for k in theirs if mine[k] != theirs[k]]
                problems.append(f"point {point} (killed after {delay:.2f} s): {name} differs after restart ({parts})")
    report = {"points": options.points, "killed_mid_run": mid_run, "duration": duration, "problems": problems}
    print(json.dumps({**report, "delays": delays}))


if __name__ == "__main__":
    sys.exit(main())
