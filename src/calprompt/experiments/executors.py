"""Where a sweep's runs execute: in this process, in a local process pool, or as Ray tasks on a cluster.

Every executor runs the same task, :func:`execute`: one run into its directory of the results store through
`run_experiment` (which holds the run's lock and writes its files atomically), recording a failure in the store
instead of raising, so one bad run never stops a sweep. With Ray the store must be a folder every node sees (a shared
file system); each task asks for its run's CPUs and GPUs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

EXECUTORS = ("serial", "pool", "ray")

# One backbone per (name, weights, device) and process, shared by the runs a worker executes.
_BACKBONES: dict[tuple[str, str | None, str], Any] = {}


@dataclass(frozen=True)
class RunTask:
    """One run to execute: its resolved config (as a dict: it crosses process boundaries) and its store."""

    config: dict[str, Any]
    store_root: str
    run_id: str
    label: str
    cpus: float = 1.0
    gpus: float = 0.0
    force: bool = False  # start the run over, replacing what its directory holds (`sweep --force`)


@dataclass(frozen=True)
class Outcome:
    run_id: str
    label: str
    ok: bool
    error: str | None = None
    seconds: float = 0.0
    busy: bool = False  # another process holds the run's directory (another sweep runs it): not a failure


def _backbone(config: Any) -> Any:
    from calprompt.clip import load_clip

    key = (config.backbone, config.pretrained, config.device)
    if key not in _BACKBONES:
        _BACKBONES[key] = load_clip(config.backbone, config.pretrained, device=config.device)
    return _BACKBONES[key]


def execute(task: RunTask) -> Outcome:
    """Run ``task`` into its store directory; a failure is recorded in the store and returned, never raised."""
    from calprompt.experiments.config import RunConfig
    from calprompt.experiments.rundir import RunDirectoryBusyError
    from calprompt.experiments.runner import run_experiment
    from calprompt.experiments.store import ResultsStore, clear_failure, record_failure

    started = time.perf_counter()
    try:
        config = RunConfig.from_dict(task.config).resolved()  # once: the store and the runner take it as it is
        run_dir = ResultsStore(task.store_root).run_dir(config)
        run_experiment(config, run_dir, backbone=_backbone(config), force=task.force)
    except RunDirectoryBusyError as error:  # running elsewhere: that process records how it ends, not this one
        return Outcome(task.run_id, task.label, False, str(error), time.perf_counter() - started, busy=True)
    except Exception as error:  # the sweep goes on; the record keeps the traceback
        failure = record_failure(task.store_root, task.run_id, task.config, error)
        return Outcome(task.run_id, task.label, False, failure.error, time.perf_counter() - started)
    clear_failure(task.store_root, task.run_id)
    return Outcome(task.run_id, task.label, True, None, time.perf_counter() - started)


class SerialExecutor:
    """One run after the other in this process (backbones loaded once)."""

    def map(self, tasks: Sequence[RunTask]) -> Iterator[Outcome]:
        for task in tasks:
            yield execute(task)


def _die_with_parent(parent: int, interval: float = 0.5) -> None:
    """End this worker process when ``parent`` (the sweep) is gone, even when it was SIGKILLed and could not stop
    its pool: on Linux the kernel sends SIGKILL at once (``PR_SET_PDEATHSIG``); everywhere a daemon thread sees the
    worker re-parented within ``interval`` seconds. The workers gone, the resource tracker reads EOF and exits too."""
    import contextlib
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # no prctl in this libc: the thread below does it
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)  # the parent died before or while the signal was set up: nothing left to report to

    threading.Thread(target=watch, name="calprompt-parent-watch", daemon=True).start()


def _init_worker(threads: int, parent: int) -> None:
    import torch

    _die_with_parent(parent)
    torch.set_num_threads(threads)


class PoolExecutor:
    """``workers`` local processes (spawned, each with ``cores // workers`` torch threads); results as they finish."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(1, (os.cpu_count() or 1) // 2)

    def map(self, tasks: Sequence[RunTask]) -> Iterator[Outcome]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        from calprompt.experiments.store import record_failure

        if not tasks:
            return
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init_worker, initargs=(threads, os.getpid())
        ) as pool:
            futures = {pool.submit(execute, task): task for task in tasks}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    yield future.result()
                except BrokenProcessPool as error:  # a worker died (killed, out of memory): its runs cannot finish
                    message = f"the worker process died ({error}); the run resumes on the next sweep"
                    record_failure(task.store_root, task.run_id, task.config, message)
                    yield Outcome(task.run_id, task.label, False, message)


class RayExecutor:
    """One Ray task per run with its CPU/GPU request, on the cluster at ``address`` (``"auto"``, ``"HOST:PORT"``).

    Without an address, an already initialised Ray is used, else a local one is started. Ray is imported only here.
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def map(self, tasks: Sequence[RunTask]) -> Iterator[Outcome]:
        try:
            import ray
        except ImportError as error:
            raise ImportError("The Ray executor needs ray: pip install 'calprompt[ray]'.") from error
        from calprompt.experiments.store import record_failure

        if not tasks:
            return
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False)
        remote = ray.remote(execute)
        pending = {remote.options(num_cpus=t.cpus, num_gpus=t.gpus).remote(t): t for t in tasks}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as error:  # the task's worker or node died: recorded by the driver
                    message = f"the Ray task failed outside the run ({type(error).__name__}: {error})"
                    record_failure(task.store_root, task.run_id, task.config, message)
                    yield Outcome(task.run_id, task.label, False, message)


def make_executor(name: str, *, workers: int | None = None, address: str | None = None) -> Any:
    """The executor called ``name`` (one of :data:`EXECUTORS`)."""
    from calprompt._validation import check_choice

    check_choice(name, "executor", EXECUTORS)
    if name == "pool":
        return PoolExecutor(workers)
    if name == "ray":
        return RayExecutor(address)
    return SerialExecutor()
