"""CoCoOp's per-image prompts: one batched B x C text pass vs a Python loop over the batch's images.

Both run side by side in this process on the same method and image features (toy backbone and random-init ViT-B-16),
forward + backward as in a training step; prints the max abs difference of the text features (exactness), the times
and the ratio. Usage: ``python benchmarks/bench_cocoop_text.py [--device cuda] [--precision bf16]``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import add_device_arguments, apply_threads, autocast, describe, memory_kind, peak_memory_mb, timed

from calprompt.clip import load_clip
from calprompt.data import load_dataset
from calprompt.methods import build_method


def compare(label: str, backbone_name: str, batch: int, classes: int, device: str, precision: str) -> None:
    torch.manual_seed(0)
    backbone = load_clip(backbone_name, device=device)
    if backbone_name == "toy":  # words the toy CLIP knows
        names = list(load_dataset("toy").classnames[:classes])
    else:
        names = [f"class {i}" for i in range(classes)]
    method = build_method("cocoop", backbone, names)
    features = F.normalize(torch.randn(batch, backbone.embed_dim, device=device), dim=-1)

    def batched() -> torch.Tensor:
        return method.encode_text(features)

    def looped() -> torch.Tensor:
        return torch.stack([method.encode_text(f[None])[0] for f in features])

    def step(encode) -> None:
        method.zero_grad(set_to_none=True)
        with autocast(device, precision):
            text = F.normalize(encode(), dim=-1)
        text.float().square().sum().backward()

    with torch.no_grad(), autocast(device, precision):
        difference = (batched().float() - looped().float()).abs().max().item()
    t_batched, _ = timed(lambda: step(batched), device, repeats=3)
    t_looped, _ = timed(lambda: step(looped), device, repeats=3)
    print(f"{label}: {batch} images x {classes} classes = {batch * classes} prompts, {device} {precision}")
    print(f"  batched B x C pass : {t_batched * 1000:9.1f} ms (forward + backward)")
    print(f"  loop over images   : {t_looped * 1000:9.1f} ms")
    print(f"  max abs diff       : {difference:.2e}")
    print(
        f"  speed-up           : {t_looped / t_batched:.2f}x   [{memory_kind(device)} {peak_memory_mb(device):.0f} MB]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    args = parser.parse_args()
    apply_threads(args)
    print(describe(args.device, args.precision))
    compare("toy backbone", "toy", batch=32, classes=24, device=args.device, precision=args.precision)
    compare("ViT-B-16 (random init)", "ViT-B-16", batch=4, classes=50, device=args.device, precision=args.precision)


if __name__ == "__main__":
    main()
