"""Time `calprompt.metrics.evaluate` on 50,000 x 1,000 logits against a per-sample Python loop.

The loop is written the way the reference evaluators are: scores turned into Python lists (`.tolist()`), one
sample at a time (softmax, prediction, NLL, Brier, classwise bin sums), then loops over bins x samples for ECE/MCE.
It runs on a subset and is scaled linearly (every step of it is linear in N) when the full set would take too long;
the output says so. It also checks that both give the same numbers on that subset.
Run: `.venv/bin/python benchmarks/bench_metrics.py [--n 50000] [--classes 1000] [--loop-samples 1000] [--device cpu]
[--precision fp32]` (``--precision`` is the dtype of the logits handed to `evaluate`, which computes in float64).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from _common import add_device_arguments, apply_threads, describe, memory_kind, peak_memory_mb, reset_peak, timed

from calprompt.metrics import evaluate

METRICS = ("accuracy", "ece", "adaptive_ece", "mce", "classwise_ece", "nll", "brier", "aurc")


def naive_evaluate(scores: list[list[float]], labels: list[int], n_bins: int = 10) -> dict[str, float]:
    """The reference style: a Python loop over samples, then over bins x samples."""
    n, n_classes = len(scores), len(scores[0])
    confidence, correct, nll, brier = [], [], 0.0, 0.0
    class_prob = [[0.0] * n_bins for _ in range(n_classes)]
    class_hit = [[0] * n_bins for _ in range(n_classes)]
    for row, label in zip(scores, labels, strict=True):
        top = max(row)
        exp = [math.exp(v - top) for v in row]
        total = sum(exp)
        probs = [e / total for e in exp]
        pred = probs.index(max(probs))
        confidence.append(probs[pred])
        correct.append(pred == label)
        nll -= math.log(probs[label])
        brier += sum((p - (c == label)) ** 2 for c, p in enumerate(probs))
        for c, p in enumerate(probs):
            b = max(0, min(n_bins - 1, math.ceil(p * n_bins) - 1))
            class_prob[c][b] += p
            if c == label:
                class_hit[c][b] += 1
    ece = mce = 0.0
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if low < confidence[i] <= high or (b == 0 and confidence[i] == 0)]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            gap = abs(accuracy - sum(confidence[i] for i in members) / len(members))
            ece += len(members) / n * gap
            mce = max(mce, gap)
    order = sorted(range(n), key=lambda i: confidence[i])
    adaptive = 0.0
    for chunk in np.array_split(np.array(order), n_bins):
        if len(chunk):
            accuracy = sum(correct[i] for i in chunk) / len(chunk)
            adaptive += len(chunk) / n * abs(accuracy - sum(confidence[i] for i in chunk) / len(chunk))
    errors, risks = 0, []
    for k, i in enumerate(sorted(range(n), key=lambda i: -confidence[i]), start=1):  # no ties in random data
        errors += not correct[i]
        risks.append(errors / k)
    classwise = sum(
        sum(abs(hit - prob) for hit, prob in zip(class_hit[c], class_prob[c], strict=True)) / n
        for c in range(n_classes)
    )
    return {
        "accuracy": sum(correct) / n,
        "ece": ece,
        "adaptive_ece": adaptive,
        "mce": mce,
        "classwise_ece": classwise / n_classes,
        "nll": nll / n,
        "brier": brier / n,
        "aurc": sum(risks) / n,
    }


def make_case(n: int, n_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=generator)
    logits = 3.0 * torch.randn(n, n_classes, generator=generator)  # float32, like model outputs
    logits[torch.arange(n), labels] += 6.0
    return logits, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--loop-samples", type=int, default=1_000, help="samples the Python loop runs on")
    args = parser.parse_args()
    apply_threads(args)
    print(describe(args.device, args.precision))

    logits, labels = make_case(args.n, args.classes)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    device_logits, device_labels = logits.to(args.device, dtype), labels.to(args.device)
    evaluate(device_logits[:100], device_labels[:100])  # warm-up (kernels, allocator)
    reset_peak(args.device)
    fast, _ = timed(lambda: evaluate(device_logits, device_labels), args.device, repeats=2)
    print(f"evaluate on {args.n:,} x {args.classes:,} {args.precision} logits: {fast:.2f} s")
    print(f"{memory_kind(args.device)}: {peak_memory_mb(args.device) / 1024:.2f} GiB")

    subset = min(args.loop_samples, args.n)
    start = time.perf_counter()
    naive = naive_evaluate(logits[:subset].tolist(), labels[:subset].tolist())
    loop = time.perf_counter() - start
    scaled = loop * args.n / subset
    if subset < args.n:
        print(f"Python loop: {loop:.2f} s on the first {subset:,} samples, scaled linearly to {scaled:.1f} s")
    else:
        print(f"Python loop: {loop:.2f} s")
    print(f"speed-up: {scaled / fast:.0f}x (target >= 100x)")

    report = evaluate(logits[:subset], labels[:subset])
    worst = max(abs(getattr(report, name) - naive[name]) for name in METRICS)
    print(f"largest |difference| between the two on the subset, over {len(METRICS)} metrics: {worst:.2e}")


if __name__ == "__main__":
    main()
