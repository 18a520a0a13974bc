"""Demo time: a cold ``make demo`` (fresh feature cache, fresh store, ``calprompt demo``) timed, and where it goes.

Each side runs ``python -m calprompt.cli demo --out STORE --quiet`` in its own subprocess with an empty feature cache
(``CALPROMPT_CACHE``) and an empty store, as ``make demo`` on a fresh clone does (the venv already installed). The
sides are this checkout's ``src`` and, with ``--old COMMIT``, that commit's ``src`` (``git archive``); they run one
after the other in this one script run, alternating when ``--repeat`` > 1, so a busy machine slows both alike:
compare the ratio, not the seconds. Printed per side: wall seconds, CPU seconds of the child (user + system, all its
worker processes), runs, and the seconds of re-drawing the report alone (``calprompt report`` on the finished store).

``--parts STORE`` times, side by side on a finished demo store, the two parts this checkout changed: the report
(``calprompt report STORE`` with each side's code, alternating) and one main split's metrics with 1,000 bootstrap
resamples (a run's default) against 200 (the demo's), on the stored logits of the store's runs (in this process).
On a machine too busy for two whole demos this gives the ratios of the parts; the rest of a run is unchanged.

``--profile`` instead runs the demo once in this process with the serial executor under cProfile and prints the
cumulative seconds of each part: training, image/text prediction, bootstrap intervals, the other metrics, post-hoc
calibrators, the transfer (domain-shift) evaluation, the report (tables, headline figures, reliability grids) and
what is left (imports, data, planning). Seconds under a profiler are inflated; the shares are what it is for.

Usage: python benchmarks/demo_time.py [--old COMMIT] [--src PATH] [--repeat N] [--executor pool|serial]
                                     [--parts STORE] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, export_sources

# (part, profiled function as "path suffix:function"): cumulative seconds of each, nested parts subtracted below
PARTS = (
    ("training", "engine/train.py:fit"),
    ("bootstrap intervals", "metrics/bootstrap.py:resampled_statistics"),
    ("metrics of every split", "metrics/report.py:evaluate"),
    ("post-hoc calibrators (SaLS, binning, isotonic, conformal)", "calibration/suite.py:posthoc_suite"),
    ("transfer evaluation (toy-domain)", "experiments/runner.py:transfer_predictions"),
    ("prediction (test logits)", "engine/evaluate.py:predict"),
    ("report: headline figures", "report/headline.py:headline_figures"),
    ("report: reliability grids", "report/build.py:reliability_figures"),
    ("report (all)", "report/build.py:write_report"),
)


def run_demo(src: Path, work: Path, executor: str) -> tuple[float, float, int]:
    """(wall s, CPU s, runs) of one cold demo with the code in ``src``."""
    store, cache = work / "store", work / "cache"
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "CALPROMPT_CACHE": str(cache)}
    command = [sys.executable, "-m", "calprompt.cli", "demo", "--out", str(store), "--quiet", "--executor", executor]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, len(list((store / "runs").iterdir()))


def time_report(src: Path, work: Path) -> float:
    """Seconds of ``calprompt report`` on the finished store (the report's tables and figures drawn again)."""
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "calprompt.cli", "report", str(work / "store"), "--out", str(work / "again")]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def compare(old: str | None, repeat: int, executor: str, src: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="demo-time-") as tmp:
        sides = {"this checkout": src}
        if old:
            sides[f"commit {old}"] = export_sources(old, Path(tmp) / "old")
        results: dict[str, list[tuple[float, float, int, float]]] = {name: [] for name in sides}
        for attempt in range(repeat):
            for name, src in sides.items():
                work = Path(tmp) / f"{name.replace(' ', '-')}-{attempt}"
                wall, cpu, runs = run_demo(src, work, executor)
                results[name].append((wall, cpu, runs, time_report(src, work)))
                print(f"  {name}: demo {wall:.1f} s wall, {cpu:.1f} s CPU, {runs} runs", flush=True)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, executor {executor}, best of {repeat}")
        print(f"{'side':<28}{'demo wall s':>12}{'CPU s':>9}{'runs':>6}{'report s':>10}")
        best = {}
        for name, rows in results.items():
            best[name] = min(rows)
            wall, cpu, runs, report = best[name]
            print(f"{name:<28}{wall:>12.1f}{cpu:>9.1f}{runs:>6}{report:>10.1f}")
        if old:
            new, before = best["this checkout"], best[f"commit {old}"]
            print(
                f"this checkout vs {old}: demo wall x{new[0] / before[0]:.2f}, CPU x{new[1] / before[1]:.2f}, "
                f"report x{new[3] / before[3]:.2f} (below 1: faster)"
            )


def time_parts(store: Path, old: str | None, repeat: int, src: Path) -> None:
    """The report of ``store`` with each side's code, and one split's metrics at 1,000 vs 200 resamples."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="demo-parts-") as tmp:
        sides = {"this checkout": src, **({f"commit {old}": export_sources(old, Path(tmp) / "old")} if old else {})}
        reports: dict[str, list[float]] = {name: [] for name in sides}
        for attempt in range(repeat):
            for name, code in sides.items():
                env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
                out = Path(tmp) / f"report-{name.replace(' ', '-')}-{attempt}"
                command = [sys.executable, "-m", "calprompt.cli", "report", str(store), "--out", str(out)]
                started = time.perf_counter()
                subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
                reports[name].append(time.perf_counter() - started)
        print(f"report of {store} ({len(list((store / 'runs').iterdir()))} runs), best of {repeat}:")
        for name, seconds in reports.items():
            print(f"  {name:<28}{min(seconds):>8.1f} s")
        if old:
            print(f"  this checkout vs {old}: x{min(reports['this checkout']) / min(reports[f'commit {old}']):.2f}")

    sys.path.insert(0, str(src))
    from calprompt.metrics import evaluate

    splits = []
    for run in sorted((store / "runs").iterdir())[:4]:
        tensors = load_file(str(run / "predictions.safetensors"))
        splits += [
            (tensors[f"{s}/logits"], tensors[f"{s}/labels"]) for s in ("base", "novel") if f"{s}/logits" in tensors
        ]
    times: dict[int, list[float]] = {1000: [], 200: []}
    for _ in range(repeat):
        for resamples in times:
            started = time.perf_counter()
            for logits, labels in splits:
                evaluate(logits, labels, bootstrap=resamples, seed=1)
            times[resamples].append(time.perf_counter() - started)
    n = splits[0][0].shape[0]
    print(f"metrics of {len(splits)} main splits ({n} images each, first 4 runs), best of {repeat}:")
    for resamples, seconds in times.items():
        print(f"  {resamples:>5} resamples {min(seconds):>8.2f} s")
    print(f"  200 vs 1000 resamples: x{min(times[200]) / min(times[1000]):.2f}")


def profile(executor: str) -> None:
    """One serial demo under cProfile in this process: the seconds of each part (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="demo-profile-") as tmp:
        os.environ["CALPROMPT_CACHE"] = str(Path(tmp) / "cache")
        os.environ["HF_HUB_OFFLINE"] = "1"
        sys.path.insert(0, str(REPO / "src"))
        started = time.perf_counter()
        profiler = cProfile.Profile()
        profiler.enable()
        from calprompt.experiments.executors import make_executor
        from calprompt.experiments.sweep import run_demo as demo

        demo(Path(tmp) / "store", executor=make_executor(executor))
        profiler.disable()
        total = time.perf_counter() - started
        stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, ncalls, tottime, cumtime, callers)
        print(f"one demo, {executor} executor, under cProfile: {total:.1f} s")
        for part, where in PARTS:
            suffix, function = where.split(":")
            seconds = sum(v[3] for k, v in stats.items() if k[0].endswith(suffix) and k[2] == function)
            print(f"  {part:<58}{seconds:>8.1f} s  {100 * seconds / total:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="also time the demo of this commit's src, side by side")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--executor", default="pool", choices=("pool", "serial"))
    parser.add_argument("--profile", action="store_true", help="profile one serial demo instead of timing")
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the new side's sources (a copy: edit freely)")
    parser.add_argument("--parts", type=Path, help="a finished demo store: time the report and the bootstrap only")
    args = parser.parse_args()
    if args.parts:
        time_parts(args.parts.resolve(), args.old, args.repeat, args.src.resolve())
    elif args.profile:
        profile("serial")
    else:
        compare(args.old, args.repeat, args.executor, args.src.resolve())


if __name__ == "__main__":
    main()
