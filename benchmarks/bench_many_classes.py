"""A CoOp + ours training step over many classes: the whole text pass vs row chunks recomputed in backward.

ViT-B-16 at random init (speed and memory do not depend on the weights), cached image features (batch 32),
``--classes`` class prompts (default 1,000, ImageNet's count). "whole": every prompt's activations kept for backward
(``text_memory_budget_mb`` = inf). "chunked": a budget of ``--budget-mb``: the features of all prompts are computed
without a graph, and each chunk is re-encoded with a graph during backward (the same gradients: checked here).
Each contender runs in its own subprocess, so its peak memory is its own: the step's memory is the peak during
the step minus what was resident before it (peak RSS on CPU, ``max_memory_allocated`` on GPU).

Usage: python benchmarks/bench_many_classes.py [--classes 1000] [--budget-mb 256] [--device cpu] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import math
import resource

import torch
from _common import (
    add_device_arguments,
    apply_threads,
    autocast,
    class_names,
    describe,
    memory_kind,
    reset_peak,
    run_child,
    sync,
    timed,
)


def _resident_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize() / 2**20


def _child(args: argparse.Namespace) -> dict:
    from calprompt.calibration import build_objective, text_moments
    from calprompt.clip import load_clip
    from calprompt.methods import build_method

    torch.manual_seed(0)
    backbone = load_clip("ViT-B-16", device=args.device)
    backbone.text_memory_budget_mb = math.inf if args.child == "whole" else args.budget_mb
    names = class_names(args.classes)
    method = build_method("coop", backbone, names)
    objective = build_objective("ours")
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(32, backbone.embed_dim, generator=generator).to(args.device)
    labels = torch.randint(0, len(names), (32,), generator=generator).to(args.device)
    with torch.no_grad():
        frozen = torch.nn.functional.normalize(torch.randn(len(names), backbone.embed_dim, generator=generator), dim=-1)
        moments = text_moments(frozen.to(args.device))

    def step() -> float:
        method.zero_grad(set_to_none=True)
        with autocast(args.device, args.precision):
            output = method(image_features=features)
            loss, _ = objective(
                logits=output.logits, labels=labels, text_features=output.text_features, zs_text_moments=moments
            )
        loss.backward()
        sync(args.device)
        return float(loss)

    sync(args.device)
    if args.device.startswith("cuda"):
        before = torch.cuda.memory_allocated(args.device) / 2**20
        reset_peak(args.device)
    else:
        before = _resident_mb()
    seconds, loss = timed(step, args.device, repeats=args.repeats)
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated(args.device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grad = method.ctx.grad.detach().double().cpu()
    return {
        "seconds": seconds,
        "loss": loss,
        "step_mb": peak - before,
        "peak_mb": peak,
        "grad": grad.flatten().tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--budget-mb", type=float, default=256.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", choices=("whole", "chunked"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = apply_threads(args)
    if args.child:
        print(json.dumps(_child(args)))
        return
    print(describe(args.device, args.precision))
    print(f"CoOp + ours step, ViT-B-16 (random init), {args.classes} classes, batch 32, cached image features")
    shared = ["--device", args.device, "--precision", args.precision, "--classes", str(args.classes), *threads]
    shared += ["--budget-mb", str(args.budget_mb), "--repeats", str(args.repeats)]
    results = {name: run_child(__file__, ["--child", name, *shared]) for name in ("whole", "chunked")}
    print(f"| text pass | step time | step memory ({memory_kind(args.device)} - resident before) | peak |")
    print("|---|---|---|---|")
    for name, result in results.items():
        label = "whole" if name == "whole" else f"chunked (budget {args.budget_mb:.0f} MB)"
        print(f"| {label} | {result['seconds']:.2f} s | {result['step_mb']:.0f} MB | {result['peak_mb']:.0f} MB |")
    whole, chunked = results["whole"], results["chunked"]
    grad_w, grad_c = torch.tensor(whole["grad"]), torch.tensor(chunked["grad"])
    relative = float((grad_c - grad_w).norm() / grad_w.norm())
    print(
        f"chunked / whole: time {chunked['seconds'] / whole['seconds']:.2f}x, step memory "
        f"{chunked['step_mb'] / whole['step_mb']:.2f}x; loss {whole['loss']:.6f} vs {chunked['loss']:.6f}; "
        f"context gradient relative difference {relative:.1e}"
    )


if __name__ == "__main__":
    main()
