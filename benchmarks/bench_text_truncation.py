"""Exact context truncation: ViT-B-16 text encoding of 100 class prompts, 77 tokens vs the first max_eot + 1.

Both paths run side by side in this process on random-init weights (speed does not depend on the values).
Prints the max abs difference (exactness) and the speed-up ratio. Memory: on a GPU the peak allocated per path;
on the CPU the process's peak RSS, a high-water mark, so the second figure is the larger of the two.

Usage: python benchmarks/bench_text_truncation.py [--device cpu] [--precision fp32]
"""

from __future__ import annotations

import argparse

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
    timed,
)

from calprompt.clip import load_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    args = parser.parse_args()
    apply_threads(args)
    device = args.device
    print(describe(device, args.precision))
    torch.manual_seed(0)
    backbone = load_clip("ViT-B-16", device=device)
    ids = backbone.tokenize([f"a photo of a {name}." for name in class_names()])
    max_eot = int(backbone.eot_positions(ids).max())
    with torch.no_grad(), autocast(device, args.precision):
        full = backbone.encode_text(ids, truncate=False)
        short = backbone.encode_text(ids, truncate=True)
        diff = (full.float() - short.float()).abs().max().item()
        reset_peak(device)
        t_full, _ = timed(lambda: backbone.encode_text(ids, truncate=False), device, repeats=3)
        peak_full = peak_memory_mb(device)
        reset_peak(device)
        t_short, _ = timed(lambda: backbone.encode_text(ids, truncate=True), device, repeats=3)
        peak_short = peak_memory_mb(device)
    print(f"ViT-B-16 text encoder, 100 prompts, max EOT position {max_eot}; {memory_kind(device)}")
    print(f"full 77 tokens : {t_full * 1000:8.1f} ms   {peak_full:8.0f} MB")
    print(f"truncated {max_eot + 1:>3}  : {t_short * 1000:8.1f} ms   {peak_short:8.0f} MB")
    print(f"max abs diff   : {diff:.2e}")
    print(f"speed-up       : {t_full / t_short:.2f}x")


if __name__ == "__main__":
    main()
