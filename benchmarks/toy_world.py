"""Measurements of the shipped toy world: load time, zero-shot quality, and a linear probe's headroom.

Prints, for every toy dataset: zero-shot accuracy and ECE on all, base and novel test classes, and the base-class
test accuracy of a linear probe (multinomial logistic regression on frozen image features, started at the zero-shot
classifier, regularisation chosen on the validation split) trained on the 16-shot base training split (the data CoOp
sees; validation: its few-shot val split) and on the full base training split (validation: the full val split).

Usage: python benchmarks/toy_world.py [--device cpu] [--precision fp32]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import add_device_arguments, apply_threads, autocast, describe, memory_kind, peak_memory_mb

from calprompt.clip import load_clip
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.data import (
    ImageTransformConfig,
    build_test_transform,
    encode_items,
    load_dataset,
    sample_few_shot,
    split_base_novel,
)
from calprompt.metrics import evaluate
from calprompt.toy.downstream import TOY_DATASETS, clear_render_cache


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, init: torch.Tensor, scale: float, weight_decay: float
) -> torch.nn.Linear:
    """Multinomial logistic regression on L2-normalised features, started at the zero-shot classifier and
    L2-regularised towards it (full-batch L-BFGS); with a large ``weight_decay`` it stays the zero-shot classifier."""
    probe = torch.nn.Linear(train_x.shape[1], init.shape[0])
    with torch.no_grad():
        probe.weight.copy_(scale * init)
        probe.bias.zero_()
    start = probe.weight.detach().clone()
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(train_x), train_y) + weight_decay * (probe.weight - start).square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def best_probe_accuracy(backbone, splits, test_x, test_y, transform) -> float:
    """Fit probes for several regularisation strengths, pick one on the validation split, report test accuracy."""

    def encode(items):
        return F.normalize(encode_items(items, backbone.encode_image, transform, loader=splits.image_loader), dim=-1)

    x, y = encode(splits.train), torch.tensor([item.label for item in splits.train])
    vx, vy = encode(splits.val), torch.tensor([item.label for item in splits.val])
    init = zero_shot_text_features(backbone, splits.classnames, splits.template).cpu()
    best = (-1.0, 0.0)
    for weight_decay in (1e-4, 1e-3, 1e-2, 1e-1):
        probe = linear_probe(x, y, init, float(backbone.logit_scale), weight_decay)
        with torch.no_grad():
            val_accuracy = (probe(vx).argmax(-1) == vy).float().mean().item()
            test_accuracy = (probe(test_x).argmax(-1) == test_y).float().mean().item()
        best = max(best, (val_accuracy, test_accuracy))
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    args = parser.parse_args()
    apply_threads(args)
    print(describe(args.device, args.precision))
    clear_render_cache()
    start = time.perf_counter()
    backbone = load_clip("toy", device=args.device)
    transform = build_test_transform(ImageTransformConfig.from_preprocess(backbone.preprocess))
    splits = {name: load_dataset(name) for name in TOY_DATASETS}
    with autocast(args.device, args.precision):
        features = {
            name: encode_items(s.test, backbone.encode_image, transform, loader=s.image_loader, device=args.device)
            for name, s in splits.items()
        }
    seconds = time.perf_counter() - start
    print(
        f"load the shipped toy CLIP + render and encode all toy test sets: {seconds:.1f} s "
        f"({sum(len(s.test) for s in splits.values())} images; {memory_kind(args.device)} "
        f"{peak_memory_mb(args.device):.0f} MB)\n"
    )
    print(
        "| dataset | classes | zero-shot acc all / base / novel | zero-shot ECE all / base / novel | "
        "linear probe base acc (16-shot / full train) |"
    )
    print("|---|---|---|---|---|")
    for name, full in splits.items():
        cells_acc, cells_ece = [], []
        few = sample_few_shot(full, 16, seed=1)
        for subset in ("all", "base", "new"):
            part = split_base_novel(few, subset)
            keep = torch.tensor([item.label for item in full.test])
            kept_labels = [full.classnames.index(c) for c in part.classnames]
            mask = torch.isin(keep, torch.tensor(kept_labels))
            labels = torch.tensor([item.label for item in part.test])
            text = zero_shot_text_features(backbone, part.classnames, part.template).cpu()
            logits = backbone.logit_scale * F.normalize(features[name][mask], dim=-1) @ text.t()
            report = evaluate(logits, labels)
            cells_acc.append(f"{100 * report.accuracy:.1f}")
            cells_ece.append(f"{100 * report.ece:.1f}")
        base_full = split_base_novel(full, "base")
        base_few = split_base_novel(few, "base")
        base_test_mask = torch.isin(
            torch.tensor([item.label for item in full.test]),
            torch.tensor([full.classnames.index(c) for c in base_full.classnames]),
        )
        test_x = F.normalize(features[name][base_test_mask], dim=-1)
        test_y = torch.tensor([item.label for item in base_full.test])
        probes = []
        for train in (base_few, base_full):
            accuracy = best_probe_accuracy(backbone, train, test_x, test_y, transform)
            probes.append(f"{100 * accuracy:.1f}")
        print(
            f"| {name} | {full.num_classes} | {' / '.join(cells_acc)} | {' / '.join(cells_ece)} | "
            f"{' / '.join(probes)} |"
        )


if __name__ == "__main__":
    main()
