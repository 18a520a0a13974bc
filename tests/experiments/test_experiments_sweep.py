"""Sweeps: expansion of the file, validation before any work, skipping finished runs, failures recorded, SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from calprompt.experiments.executors import PoolExecutor
from calprompt.experiments.store import ResultsStore, iter_failures
from calprompt.experiments.sweep import SweepSpec, expand, load_sweep, plan_sweep, run_sweep, shipped_sweeps


def _spec(**sections) -> SweepSpec:
    return SweepSpec.from_dict(sections, "test.yaml")


def comparable(metrics: dict) -> dict:
    """Metrics without wall-clock times (everything else is a deterministic function of the config)."""
    out = json.loads(json.dumps(metrics))
    out["train"].pop("seconds")
    out["run"].pop("seconds")
    return out


def tiny_sweep(weights: str, **extra) -> dict:
    """Two quick CoOp runs and a zero-shot run on the toy world with a random-init toy CLIP (20 bootstrap resamples:
    the intervals' code path without the 1,000 resamples that are most of such a tiny run's time)."""
    base = {"pretrained": weights, "shots": 1, "epochs": 3, "batch_size": 8, "recipe": "fast", "bootstrap": 20}
    return {
        "name": "tiny",
        "base": {**base, **extra},
        "matrix": {"dataset": ["toy"], "method": ["coop"], "calibration": ["none", "ours"], "seed": [1]},
        "include": [{"method": "zeroshot", "calibration": "none", "seed": 1, "epochs": 0}],
    }


def test_matrix_exclude_include_and_grouped_axes():
    spec = _spec(
        base={"recipe": "fast"},
        matrix={
            "dataset": ["toy", "toy-texture"],
            "variant": [{"method": "coop", "calibration": "ours"}, {"method": "coop", "calibration": "none"}],
            "seed": [1, 2, 3],
            "method_options.n_ctx": 4,
        },
        exclude=[{"dataset": "toy-texture", "seed": [2, 3]}],
        include=[{"method": "zeroshot", "calibration": "none", "seed": 1}],
    )
    runs = expand(spec)
    # 2 datasets x 2 variants x 3 seeds = 12, minus toy-texture seeds 2-3 (2 variants x 2) = 8; plus zero-shot on
    # each dataset (crossed with dataset and n_ctx, the axes it does not set) = 10
    assert len(runs) == 10
    assert {"dataset": "toy", "method": "coop", "calibration": "ours", "seed": 1, "method_options.n_ctx": 4} in runs
    assert sum(r["method"] == "zeroshot" for r in runs) == 2
    assert not any(r["dataset"] == "toy-texture" and r["seed"] == 3 for r in runs)


def test_plan_validates_every_run_before_any_work(tmp_path):
    good = {"dataset": ["toy"], "method": ["coop"], "calibration": ["none"]}
    with pytest.raises(ValueError, match="unknown_section"):
        _spec(matrix=good, unknown_section={})
    cases = [
        ({"matrix": {**good, "calibration": ["none", "ourz"]}}, "ourz"),
        ({"matrix": {**good, "method": ["coop", "nope"]}}, "nope"),
        ({"matrix": {**good, "dataset": ["toy", "imagenet-z"]}}, "imagenet-z"),
        ({"matrix": good, "base": {"shotz": 4}}, "shotz"),
        ({"matrix": good, "base": {"shots": "many"}}, "shots"),
        ({"matrix": good, "base": {"eval_datasets": ["toy-domain", "nowhere"]}}, "nowhere"),
    ]
    for sections, named in cases:
        with pytest.raises(ValueError, match=named):
            plan_sweep(_spec(**sections), tmp_path / "store")
    assert not (tmp_path / "store").exists()  # nothing was written


def test_every_method_skips_methods_without_a_recipe(tmp_path, monkeypatch):
    from calprompt.methods import base as method_base
    from calprompt.methods.coop import CoOp

    method_base._load_builtins()
    monkeypatch.setitem(method_base.METHODS, "recipeless", CoOp)
    plan = plan_sweep(_spec(base={"recipe": "fast"}, matrix={"method": "*", "calibration": "none"}), tmp_path)
    methods = sorted(run.config.method for run in plan.runs)
    assert "recipeless" not in methods and {"coop", "zeroshot"} <= set(methods)
    assert any("recipeless" in note for note in plan.notes)


def test_shipped_sweeps_plan(tmp_path):
    assert {"demo", "demo-quick", "paper-base2novel"} <= set(shipped_sweeps())
    for name in shipped_sweeps():
        spec = load_sweep(name)
        if not spec.base.get("dataset", "toy").startswith("toy") or spec.base.get("backbone") != "toy":
            spec = spec.with_base({"root": str(tmp_path)})  # planning reads no data, so any folder will do
        assert plan_sweep(spec, tmp_path / name).runs


def test_failing_run_is_recorded_and_the_sweep_goes_on_in_a_process_pool(toy_weights, tmp_path, cache_env):
    (tmp_path / "empty").mkdir()
    sections = tiny_sweep(toy_weights)
    sections["include"] = [
        {"dataset": "folder", "backbone": "toy", "root": str(tmp_path / "empty"), "calibration": "none"}
    ]
    plan = plan_sweep(_spec(**sections), tmp_path / "store")
    assert len(plan.pending) == 3
    summary = run_sweep(plan, PoolExecutor(workers=2))
    assert (summary.done, summary.failed, summary.skipped) == (2, 1, 0)
    [failure] = iter_failures(tmp_path / "store")
    assert failure.config["dataset"] == "folder" and "Traceback" in failure.traceback
    assert str(tmp_path / "empty") in failure.error
    again = plan_sweep(_spec(**sections), tmp_path / "store")
    assert len(again.finished) == 2 and again.failed_before == {failure.run_id}

    # the pool's results equal the serial executor's
    del sections["include"]
    serial = ResultsStore(tmp_path / "serial")
    assert run_sweep(plan_sweep(_spec(**sections), serial)).done == 2
    pooled = {run.path.name: comparable(run.metrics) for run in ResultsStore(tmp_path / "store").iter_runs()}
    assert pooled == {run.path.name: comparable(run.metrics) for run in serial.iter_runs()}


def test_killed_sweep_restarts_without_recomputing_and_gives_identical_results(toy_weights, tmp_path, cache_env):
    """SIGKILL the `calprompt sweep` process once its first run has finished; the restart skips that run."""
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump(tiny_sweep(toy_weights)), encoding="utf-8")
    store = tmp_path / "killed"
    command = [sys.executable, "-m", "calprompt.cli", "sweep", str(sweep_file), "--store", str(store), "--quiet"]
    process = subprocess.Popen(command, env=cache_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline and not list(store.glob("runs/*/finished.json")):
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = {path.parent.name: path.stat().st_mtime_ns for path in store.glob("runs/*/finished.json")}
    assert 1 <= len(first) < 3

    restart = subprocess.run(command, env=cache_env, capture_output=True, text=True, check=True)
    assert f"{len(first)} finished" in restart.stdout
    after = {p.parent.name: p.stat().st_mtime_ns for p in store.glob("runs/*/finished.json")}
    assert len(after) == 3 and {name: after[name] for name in first} == first  # finished runs were not redone

    reference = ResultsStore(tmp_path / "reference")
    assert run_sweep(plan_sweep(load_sweep(sweep_file), reference)).done == 3
    killed = {run.path.name: comparable(run.metrics) for run in ResultsStore(store).iter_runs()}
    uninterrupted = {run.path.name: comparable(run.metrics) for run in reference.iter_runs()}
    assert killed == uninterrupted


def _descendants(pid: int) -> set[int]:
    """Live processes below ``pid`` (from /proc; zombies count as gone: they only wait to be reaped)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_killed_pool_sweep_leaves_no_process_behind(toy_weights, tmp_path, cache_env):
    """SIGKILL a `--executor pool` sweep while its workers run: its workers and the resource tracker end too."""
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump(tiny_sweep(toy_weights)), encoding="utf-8")
    store = tmp_path / "store"
    command = [sys.executable, "-m", "calprompt.cli", "sweep", str(sweep_file), "--store", str(store)]
    command += ["--executor", "pool", "--workers", "2", "--quiet"]
    process = subprocess.Popen(
        command, env=cache_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline, children = time.time() + 300, set()
        while process.poll() is None and time.time() < deadline:
            children = _descendants(process.pid)
            if len(children) >= 3 and list(store.glob("runs/*")):  # 2 workers + the resource tracker, runs started
                break
            time.sleep(0.1)
        assert process.poll() is None and len(children) >= 3, process.stderr.read().decode()[-2000:]
        time.sleep(1.0)  # the workers are inside their runs
        children = _descendants(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(map(_alive, children)):
            time.sleep(0.2)
        assert [pid for pid in children if _alive(pid)] == []
    finally:  # whatever failed above: end what this test started (its own session; nothing else is in it)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
