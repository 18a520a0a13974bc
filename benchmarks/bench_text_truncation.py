"""Exact context truncation on ViT-B-16: all 77 positions vs the first max_eot + 1, and prompts grouped by length.

Two measurements, every contender side by side in this process on random-init weights (speed does not depend on
the values), alternating (best of the rounds), so a machine shared with other work slows each alike:

- frozen text features of 100 class prompts: all 77 positions; truncated to the longest prompt (one group); truncated
  per length group (the default, `ClipBackbone.length_buckets = None`);
- a CoOp context's forward + backward pass over 200 class prompts of one to four words: one group vs length groups.

Prints the largest difference from the reference path (exactness) and the ratios. Memory: on a GPU the peak
allocated per contender; on the CPU the process's peak RSS, a high-water mark (only its first figure is per
contender).

Usage: python benchmarks/bench_text_truncation.py [--rounds N] [--device cpu] [--precision fp32]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _common import (
    add_device_arguments,
    apply_threads,
    autocast,
    class_names,
    describe,
    memory_kind,
    peak_memory_mb,
    reset_peak,
    time_alternating,
)

from calprompt.clip import ClipBackbone, load_clip
from calprompt.methods import build_method


def _with_groups(backbone: ClipBackbone, groups: bool | None, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        backbone.length_buckets = groups
        try:
            return fn()
        finally:
            backbone.length_buckets = None

    return run


def frozen_features(backbone: ClipBackbone, rounds: int, device: str, precision: str) -> None:
    ids = backbone.tokenize([f"a photo of a {name}." for name in class_names()])
    max_eot = int(backbone.eot_positions(ids).max())

    def truncated() -> torch.Tensor:
        return backbone.encode_text(ids, truncate=True)

    with torch.no_grad(), autocast(device, precision):
        contenders = {
            "all 77 positions": lambda: backbone.encode_text(ids, truncate=False),
            f"truncated to {max_eot + 1}, one group": _with_groups(backbone, False, truncated),
            "truncated per length group": _with_groups(backbone, None, truncated),
        }
        reference = contenders["all 77 positions"]().float()
        peaks = {}
        for name, run in contenders.items():
            reset_peak(device)
            diff = (run().float() - reference).abs().max().item()
            peaks[name] = (peak_memory_mb(device), diff)
        times = time_alternating(contenders, rounds, device)
    print(f"frozen text features, 100 prompts, longest {max_eot + 1} positions ({memory_kind(device)})")
    base = times["all 77 positions"]
    for name, seconds in times.items():
        peak, diff = peaks[name]
        print(f"  {name:<34}: {seconds * 1000:8.1f} ms  {base / seconds:5.2f}x  max diff {diff:.1e}  {peak:6.0f} MB")


def prompted_pass(backbone: ClipBackbone, rounds: int, device: str, precision: str) -> None:
    names = class_names(200)
    method = build_method("coop", backbone, names)
    weights = torch.randn(len(names), backbone.embed_dim, generator=torch.Generator().manual_seed(1)).to(device)

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        method.ctx.grad = None
        with autocast(device, precision):
            features = method.encode_text()
        (features.float() * weights).sum().backward()
        return features.detach().float(), method.ctx.grad.clone()

    contenders = {"one group": _with_groups(backbone, False, step), "length groups": _with_groups(backbone, None, step)}
    (features, grad), (grouped_features, grouped_grad) = (run() for run in contenders.values())
    times = time_alternating(contenders, rounds, device)
    lengths = backbone.eot_positions(method.prompts.ids) + 1
    print(
        f"CoOp context forward + backward, 200 prompts of {int(lengths.min())} to {int(lengths.max())} positions: "
        f"features differ by {(features - grouped_features).abs().max().item():.1e}, context gradients by "
        f"{((grad - grouped_grad).norm() / grad.norm()).item():.1e} relative"
    )
    for name, seconds in times.items():
        print(f"  {name:<13}: {seconds * 1000:8.1f} ms  {times['one group'] / seconds:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    apply_threads(args)
    print(describe(args.device, args.precision))
    torch.manual_seed(0)
    backbone = load_clip("ViT-B-16", device=args.device)
    frozen_features(backbone, args.rounds, args.device, args.precision)
    prompted_pass(backbone, args.rounds, args.device, args.precision)


if __name__ == "__main__":
    main()
