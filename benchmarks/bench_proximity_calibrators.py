"""Time the proximity-informed post-hoc step of a run at ImageNet's base-to-novel scale, side by side with
temperature scaling and with `evaluate()` itself, in one process.

What is measured, on random float32 features and logits of the sizes a run hands over (defaults: a validation split
of 4 images x 500 base classes, 25,000 test images x 500 classes, 512-d features):
1. the kNN proximity: each test image to the validation images (K = 5), and the validation images' own;
2. fit + transform of each calibrator a run applies: temperature scaling (the reference), multi-isotonic regression,
   ProCal's density ratio and proximity-binned isotonic regression;
3. `evaluate()` on the test logits without and with `proximity` (PIECE's extra cost).
Each line prints its best wall time of ``--repeats`` and its ratio to temperature scaling. Threads: torch's default
unless ``--threads`` is given. Run: `.venv/bin/python benchmarks/bench_proximity_calibrators.py [--val 2000]
[--test 25000] [--classes 500] [--dim 512] [--repeats 3] [--threads N]`.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import apply_threads, timed

from calprompt.calibration import (
    DensityRatioCalibration,
    MultiIsotonicRegression,
    ProximityIsotonicRegression,
    TemperatureScaling,
)
from calprompt.calibration.proximity import proximity, self_proximity
from calprompt.metrics import evaluate


def _split(generator: torch.Generator, n: int, classes: int, dim: int) -> tuple[torch.Tensor, ...]:
    labels = torch.randint(0, classes, (n,), generator=generator)
    logits = 3 * torch.randn(n, classes, generator=generator)
    logits[torch.arange(n), labels] += 4 * torch.rand(n, generator=generator)
    features = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
    return logits, labels, features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=2_000)
    parser.add_argument("--test", type=int, default=25_000)
    parser.add_argument("--classes", type=int, default=500)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    apply_threads(args)
    generator = torch.Generator().manual_seed(0)
    val_logits, val_labels, val_features = _split(generator, args.val, args.classes, args.dim)
    logits, labels, features = _split(generator, args.test, args.classes, args.dim)
    val_near = self_proximity(val_features)
    near = proximity(features, val_features)
    steps = {
        "temperature scaling": lambda: TemperatureScaling().fit(val_logits, val_labels).transform(logits),
        "kNN proximity (test + val)": lambda: (proximity(features, val_features), self_proximity(val_features)),
        "multi-isotonic": lambda: MultiIsotonicRegression().fit(val_logits, val_labels).transform(logits),
        "ProCal density ratio": lambda: (
            DensityRatioCalibration().fit(val_logits, val_labels, val_near).transform(logits, near)
        ),
        "ProCal isotonic": lambda: (
            ProximityIsotonicRegression().fit(val_logits, val_labels, val_near).transform(logits, near)
        ),
        "evaluate()": lambda: evaluate(logits, labels),
        "evaluate(proximity=...)": lambda: evaluate(logits, labels, proximity=near),
    }
    print(
        f"val {args.val} x {args.classes}, test {args.test} x {args.classes}, features {args.dim}-d, CPU threads "
        f"{torch.get_num_threads()}"
    )
    reference = None
    for name, step in steps.items():
        seconds, _ = timed(step, "cpu", args.repeats)
        reference = reference or seconds
        print(f"{name:28s} {seconds:8.3f} s   {seconds / reference:6.1f}x temperature scaling")


if __name__ == "__main__":
    main()
