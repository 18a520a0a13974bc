"""Time bootstrap intervals on 50,000 x 1,000 logits: `evaluate(..., bootstrap=1000)` against `evaluate()` alone and
against a loop over resamples that re-evaluates each resampled data set.

What is measured, each on the same logits (float32, N x C) and labels:
1. `evaluate(logits, labels)`: every metric once, no intervals (the fast default).
2. `evaluate(logits, labels, bootstrap=R)`: the same plus percentile intervals for accuracy, ECE, smooth ECE, NLL and
   Brier and the band of the smoothed reliability curve, from R multinomial resamples (weights, no Python loop over
   resamples). Its extra cost over 1. is the bootstrap's.
3. the bootstrap's parts: the additive statistics only (accuracy, ECE, NLL, Brier: one matrix product per block) and
   smooth ECE only (a bandwidth search per resample).
4. the loop: index the logits with each resample's indices and call `evaluate()` on it, as one would without the
   weighted formulation; run for a few resamples and scaled linearly to R (the output says so). It checks the two
   agree on those resamples.
Peak memory is printed (the logits alone take N x C x 4 bytes at fp32; `--precision` is the logits' dtype, as a
model under that autocast returns them). Threads: torch's default unless `--threads` is given. Run:
`.venv/bin/python benchmarks/bench_bootstrap.py [--n 50000] [--classes 1000] [--resamples 1000] [--loop-resamples 3]
[--device cpu] [--precision fp32] [--threads N]`.
"""

from __future__ import annotations

import argparse

import torch
from _common import add_device_arguments, apply_threads, describe, memory_kind, peak_memory_mb, reset_peak, timed

from calprompt.metrics import evaluate
from calprompt.metrics.bootstrap import (
    BOOTSTRAP_STATISTICS,
    resample_counts,
    resampled_statistics,
    top_label_sample,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--resamples", type=int, default=1_000)
    parser.add_argument("--loop-resamples", type=int, default=3)
    add_device_arguments(parser)
    args = parser.parse_args()
    apply_threads(args)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, args.classes, (args.n,), generator=generator)
    logits = 4 * torch.randn(args.n, args.classes, generator=generator)
    logits[torch.arange(args.n), labels] += 6.0  # a plausible accuracy (~70 %) and miscalibration
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    logits, labels = logits.to(args.device, dtype), labels.to(args.device)
    print(describe(args.device, args.precision))
    print(f"N = {args.n}, C = {args.classes}, R = {args.resamples} resamples")
    evaluate(logits[:100], labels[:100], bootstrap=10)  # warm-up: first calls pay one-off initialisation
    reset_peak(args.device)

    t_plain, plain = timed(lambda: evaluate(logits, labels), args.device)
    t_boot, report = timed(lambda: evaluate(logits, labels, bootstrap=args.resamples, seed=0), args.device)
    sample = top_label_sample(torch.softmax(logits.double(), 1), labels)
    additive = tuple(name for name in BOOTSTRAP_STATISTICS if name != "smooth_ece")

    def resampled(statistics: tuple[str, ...]):
        return lambda: resampled_statistics(sample, args.resamples, 0, 10, statistics=statistics)

    t_additive, _ = timed(resampled(additive), args.device)
    t_smooth, _ = timed(resampled(("smooth_ece",)), args.device)

    def loop() -> list[dict[str, float]]:
        out = []
        for counts in resample_counts(args.n, args.loop_resamples, 0, logits.device):
            for row in counts:
                rows = torch.repeat_interleave(torch.arange(args.n, device=logits.device), row.long())
                resampled = evaluate(logits[rows], labels[rows])
                out.append({name: getattr(resampled, name) for name in BOOTSTRAP_STATISTICS})
        return out

    t_loop, looped = timed(loop, args.device)
    weighted, _ = resampled_statistics(sample, args.loop_resamples, 0, 10)
    worst = max(
        abs(looped[i][name] - float(weighted[name][i])) for i in range(args.loop_resamples) for name in looped[i]
    )
    t_loop_scaled = t_loop / args.loop_resamples * args.resamples

    print(f"evaluate(), no intervals              {t_plain:8.2f} s")
    print(
        f"evaluate(bootstrap={args.resamples})            {t_boot:8.2f} s  (bootstrap alone ~{t_boot - t_plain:.2f} s)"
    )
    print(f"  additive statistics only            {t_additive:8.2f} s")
    print(f"  smooth ECE only                     {t_smooth:8.2f} s")
    print(
        f"loop over resamples (evaluate each)   {t_loop_scaled:8.2f} s  (measured on {args.loop_resamples}, "
        f"scaled x{args.resamples / args.loop_resamples:.0f}; max |difference| {worst:.1e})"
    )
    print(f"speed-up of the weighted bootstrap over the loop: {t_loop_scaled / (t_boot - t_plain):.0f}x")
    logits_gib = logits.numel() * logits.element_size() / 2**30
    print(f"{memory_kind(args.device)}: {peak_memory_mb(args.device) / 1024:.2f} GiB (logits {logits_gib:.2f} GiB)")
    print(f"ECE {plain.ece:.4f}, 95 % interval {report.intervals.ece}; smooth ECE {plain.smooth_ece:.4f}")


if __name__ == "__main__":
    main()
