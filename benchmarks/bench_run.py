"""A cold toy CoOp + ours paper-recipe run end to end: the code this speed work started from, today's per-image
path, and today's default, side by side in one script run.

- "then": calprompt as of commit ``--then-commit`` (the state the speed issue was filed against), exported from this
  repository's history with ``git archive`` into a temporary folder and imported from there: per-image PIL views,
  every toy image rendered again for every view, torch's global generator re-seeded per item.
- "per-image": today's code given plain per-image ``Compose`` transforms, which select the per-image path
  (``ItemDataset``) for the training views and the test images: what any plain PIL transform still gets.
- "now": the default: images decoded (toy: rendered) once, crops and flips drawn from per-item generators, batches
  resampled as tensors, 64-image encoder batches on the CPU, text blocks without ``nn.MultiheadAttention``'s
  overhead.

Each run is its own subprocess with an empty feature cache and nothing memoised (cold), and reports its time split:

- views: making the augmented/test views (decoding, augmentation, normalisation),
- encoding: the frozen image encoder on them,
- training: the training loop without the above,
- evaluation: test predictions, metrics and post-hoc calibration without the above,
- other: loading the backbone and the data, writing the run.

Runs go round robin (then, per-image, now with each pipeline's first seed, then with the second, ...), so that a
machine whose speed drifts during the script slows every pipeline alike. With ``--jobs N`` up to N runs go at once
(each its own process): on a machine shared with other work, the runs that start first finish with less
competition, so run it alone (``--jobs 1``) for ratios.

Usage: python benchmarks/bench_run.py [--seeds 1 2 3] [--then-seeds 1] [--per-image-seeds 1] [--then-commit REV]
[--epochs N] [--jobs 1] [--device cpu] [--precision fp32] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import (
    add_device_arguments,
    apply_threads,
    describe,
    export_sources,
    memory_kind,
    peak_memory_mb,
    reset_peak,
    run_child,
)

# The last commit before the speed work (image views, shared prefix, chunked text passes, start-up).
THEN_COMMIT = "893265c"
PIPELINES = ("then", "per-image", "now")
METRICS = (("base", "accuracy"), ("base", "ece"), ("novel", "accuracy"), ("novel", "ece"))


def _child(pipeline: str, seed: int, epochs: int | None, device: str, precision: str) -> dict:
    from torchvision import transforms as T

    import calprompt.engine.data as engine_data
    import calprompt.engine.evaluate as engine_evaluate

    try:  # today's layout: the base-to-novel protocol trains and evaluates, the runner runs it
        import calprompt.experiments.protocols.base2novel as run_module
        from calprompt.experiments.runner import run_experiment
    except ImportError:  # "then": its commit's layout
        import calprompt.experiments.run as run_module

        run_experiment = run_module.run_experiment
    from calprompt.clip import load_clip
    from calprompt.data.transforms import build_test_transform, build_train_transform
    from calprompt.experiments.config import RunConfig

    clock: dict[str, float] = defaultdict(float)
    inside: list[str] = []  # the phase whose time is being measured, innermost last

    def timed(phase: str, fn):
        def wrapper(*args, **kwargs):
            inside.append(phase)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                inside.pop()
                clock[phase] += seconds
                if inside:  # count time once, in the innermost phase
                    clock[inside[-1]] -= seconds

        return wrapper

    if pipeline == "per-image":  # plain per-image Compose transforms select the per-item path everywhere
        engine_data.build_train_transform = lambda config: T.Compose(build_train_transform(config).transforms)
        engine_evaluate.build_test_transform = lambda config: T.Compose(build_test_transform(config).transforms)
    for module in (engine_data, engine_evaluate):  # "then" has only encode_items
        for name in ("encode_views", "encode_items"):
            if hasattr(module, name):
                setattr(module, name, timed("views", getattr(module, name)))
    run_module.evaluate_base_novel = timed("evaluation", run_module.evaluate_base_novel)
    trainer_fit = run_module.Trainer.fit
    run_module.Trainer.fit = timed("training", trainer_fit)

    reset_peak(device)
    started = time.perf_counter()
    backbone = load_clip("toy", device=device)
    backbone.encode_image = timed("encoding", backbone.encode_image)
    config = RunConfig(
        dataset="toy", method="coop", calibration="ours", recipe="paper", seed=seed, device=device, precision=precision
    )
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    with tempfile.TemporaryDirectory() as folder:
        result = run_experiment(config, Path(folder) / "run", backbone=backbone, cache_dir=Path(folder) / "cache")
    total = time.perf_counter() - started
    split = {phase: clock[phase] for phase in ("views", "encoding", "training", "evaluation")}
    split["other"] = total - sum(split.values())
    metrics = {f"{split_name} {name}": 100 * result.metrics[split_name][name] for split_name, name in METRICS}
    return {"total": total, "split": split, "metrics": metrics, "peak_mb": peak_memory_mb(device)}


def _summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--then-seeds", type=int, nargs="*", default=[1], help="seeds also run with the old code")
    parser.add_argument("--per-image-seeds", type=int, nargs="*", default=[1], help="seeds also run per image")
    parser.add_argument("--then-commit", default=THEN_COMMIT, help="the old code's commit (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="override the paper recipe's epochs")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once (> 1 on a shared machine: all runs see the same load)"
    )
    parser.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = apply_threads(args)
    if args.child:
        print(json.dumps(_child(args.child, args.seed, args.epochs, args.device, args.precision)))
        return

    print(describe(args.device, args.precision))
    print(f"cold toy CoOp + ours, paper recipe{'' if args.epochs is None else f' ({args.epochs} epochs)'}")
    shared = ["--device", args.device, "--precision", args.precision, *threads]
    if args.epochs is not None:
        shared += ["--epochs", str(args.epochs)]
    # Round robin (then, per-image, now for the first seed of each, then the second, ...): a machine whose speed
    # drifts over the minutes of the script (a shared VM's does, by 10-30 %) slows every pipeline alike.
    queues = {"then": list(args.then_seeds), "per-image": list(args.per_image_seeds), "now": list(args.seeds)}
    jobs = [
        (pipeline, queues[pipeline][turn])
        for turn in range(max(map(len, queues.values())))
        for pipeline in PIPELINES
        if turn < len(queues[pipeline])
    ]
    with tempfile.TemporaryDirectory() as folder:
        then_src = export_sources(args.then_commit, Path(folder) / "then") if args.then_seeds else None
        print(f"then = commit {args.then_commit}" if then_src else "then: not run")

        def run(job: tuple[str, int]) -> dict:
            pipeline, seed = job
            src = then_src if pipeline == "then" else None
            result = run_child(__file__, ["--child", pipeline, "--seed", str(seed), *shared], src=src)
            print(f"  {pipeline} seed {seed}: {result['total']:.1f} s", file=sys.stderr)
            return result

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run, jobs))
    runs: dict[str, dict[int, dict]] = {pipeline: {} for pipeline in PIPELINES}
    for (pipeline, seed), result in zip(jobs, results, strict=True):
        runs[pipeline][seed] = result
    runs = {pipeline: by_seed for pipeline, by_seed in runs.items() if by_seed}

    phases = ("views", "encoding", "training", "evaluation", "other")
    header = "| pipeline | seeds | " + " | ".join(phases) + f" | total | {memory_kind(args.device)} |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for pipeline, by_seed in runs.items():
        results = list(by_seed.values())
        cells = [_summary([r["split"][p] for r in results]) for p in phases]
        total = _summary([r["total"] for r in results])
        peak = max(r["peak_mb"] for r in results)
        print(f"| {pipeline} | {len(results)} | " + " | ".join(cells) + f" | {total} s | {peak:.0f} MB |")
    for baseline in ("then", "per-image"):
        common = sorted(set(runs.get(baseline, {})) & set(runs.get("now", {})))
        if common:
            ratio = statistics.mean(runs[baseline][s]["total"] / runs["now"][s]["total"] for s in common)
            print(f"end to end: now is {ratio:.1f}x faster than {baseline} (seeds {common}, same machine)")
    print("\nmetrics (%), mean ± std over seeds")
    names = [f"{a} {b}" for a, b in METRICS]
    print("| pipeline | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(names) + 1))
    for pipeline, by_seed in runs.items():
        cells = [_summary([r["metrics"][n] for r in by_seed.values()]) for n in names]
        print(f"| {pipeline} ({len(by_seed)} seeds) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
