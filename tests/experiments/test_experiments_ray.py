"""The Ray executor on a local Ray instance started by the test: same metrics as serial, failures recorded."""

from __future__ import annotations

import os

import pytest

from calprompt.experiments.executors import RayExecutor
from calprompt.experiments.store import ResultsStore, iter_failures
from calprompt.experiments.sweep import SweepSpec, plan_sweep, run_sweep
from tests.experiments.test_experiments_sweep import comparable, tiny_sweep

if not os.environ.get("CI"):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'calprompt[ray]'); CI installs it")


@pytest.fixture()
def local_ray(cache_env):
    import ray

    # Two CPUs on loopback; the workers inherit this process's environment (feature cache, offline hub).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def test_ray_sweep_matches_serial_and_records_a_failing_task(local_ray, toy_weights, tmp_path, cache_env):
    (tmp_path / "empty").mkdir()
    sections = tiny_sweep(toy_weights)
    sections["include"].append(
        {"dataset": "folder", "backbone": "toy", "root": str(tmp_path / "empty"), "calibration": "none"}
    )
    spec = SweepSpec.from_dict(sections, "ray.yaml")

    on_ray = ResultsStore(tmp_path / "ray")
    summary = run_sweep(plan_sweep(spec, on_ray), RayExecutor())
    assert (summary.done, summary.failed) == (3, 1)
    [failure] = iter_failures(on_ray.root)
    assert failure.config["dataset"] == "folder" and "no class sub-folders" in failure.error
    assert "Traceback" in failure.traceback  # raised inside the Ray task, recorded there

    serial = ResultsStore(tmp_path / "serial")
    assert run_sweep(plan_sweep(spec, serial)).done == 3
    ray_metrics = {run.path.name: comparable(run.metrics) for run in on_ray.iter_runs()}
    serial_metrics = {run.path.name: comparable(run.metrics) for run in serial.iter_runs()}
    assert len(ray_metrics) == 3 and ray_metrics == serial_metrics
