"""Deep and multimodal prompts: one training step of each method in calprompt vs a step in the reference code's style.

calprompt's step is the training loop's own (`Trainer._step`: forward, the method's loss terms, backward, SGD step).
The reference-style step computes the same loss the way the published code does: the prompted text encoder over all
77 token positions; VPT's fixed text prompts re-encoded every step; PromptSRC's frozen image pass on the same batch
(both do that one; its template-ensemble teacher is precomputed in both, as in its code). The loss values are checked
equal before timing. Image decoding and augmentation, paid by both, are left out.

Usage: python benchmarks/bench_method_steps.py [--steps N] [--classes C] [--batch B] [--backbone toy]
[--device cpu] [--precision fp32] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.nn.functional as F
from _common import (
    add_device_arguments,
    apply_threads,
    autocast,
    describe,
    memory_kind,
    peak_memory_mb,
    reset_peak,
    time_alternating,
)
from bench_cached_training import REAL_CLASSNAMES  # this script's folder is on the path
from torch import Tensor

from calprompt.calibration import build_objective
from calprompt.clip import ClipBackbone, load_clip
from calprompt.data import ImageTransformConfig
from calprompt.data.items import Item
from calprompt.engine.data import TrainingData
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.methods import PromptMethod, build_method
from calprompt.methods.deep_prompts import layer_prompts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = ("ivlp", "maple", "vpt", "promptsrc")
TOY_CLASSNAMES = [f"{c} {s}" for c in ("red", "green", "blue", "cyan") for s in ("circle", "ring", "cross")]


def full_length_text(method: PromptMethod, backbone: ClipBackbone) -> Tensor:
    """Prompted text features over all context positions (the reference code's text pass)."""
    if not hasattr(method, "text"):  # VPT: the fixed "a photo of a {}." prompts, re-encoded every step
        ids = backbone.tokenize([f"a photo of a {name}." for name in method.classnames])
        with torch.no_grad():
            return backbone.encode_text(ids, truncate=False)
    text = method.text
    embeddings, ids = text.layer0_embeddings().to(backbone.dtype), text.tokens.ids  # (C, L, D), (C, L)
    pad = backbone.context_length - ids.shape[1]
    ids = F.pad(ids, (0, pad))  # padding id 0, as the tokenizer pads
    padding = backbone.embed_tokens(torch.zeros_like(ids[:, :pad])).to(embeddings.dtype)  # (C, 77 - L, D)
    embeddings = torch.cat([embeddings, padding], dim=1)  # (C, 77, D)
    deep = layer_prompts(text.deep)
    return backbone.encode_text_embeddings(embeddings, ids, deep_prompts=deep, truncate=False)


def reference_loss(method: PromptMethod, images: Tensor, labels: Tensor) -> Tensor:
    backbone = method.backbone
    image = F.normalize(method.encode_image(images), dim=-1)
    text = F.normalize(full_length_text(method, backbone), dim=-1)
    logits = method.logits(image, text)
    inputs = {"logits": logits, "labels": labels, "text_features": text, "image_features": image}
    if "zs_image_features" in method.needs:
        with torch.no_grad():
            inputs["zs_image_features"] = F.normalize(backbone.encode_image(images), dim=-1)
    loss = F.cross_entropy(logits, labels)
    return loss + sum(weight * value for weight, value in method.losses(inputs).values())


def calprompt_trainer(method: PromptMethod, device: str, precision: str) -> Trainer:
    size = method.backbone.preprocess.image_size
    data = TrainingData(
        [Item("bench://0", 0, method.classnames[0])],
        method.backbone.encode_image,
        method.backbone.identity,
        ImageTransformConfig(image_size=size),
    )
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-3, warmup_epochs=0, device=device, precision=precision)
    return Trainer(method, build_objective("none"), data, config)


def bench(
    backbone: ClipBackbone, name: str, classnames: list[str], batch: int, steps: int, device: str, precision: str
) -> None:
    torch.manual_seed(0)
    method = build_method(name, backbone, classnames).to(device)
    size = backbone.preprocess.image_size
    images = torch.randn(batch, 3, size, size).to(device)
    labels = (torch.arange(batch) % len(classnames)).to(device)
    trainer = calprompt_trainer(method, device, precision)
    method.train()

    with torch.no_grad(), autocast(device, precision):
        reference = reference_loss(method, images, labels).item()
    ours = trainer._step(None, images, labels, (0, 0), update=False)["loss"].item()  # backward without a step
    trainer.optimizer.zero_grad(set_to_none=True)
    tolerance = 1e-4 if precision == "fp32" else 5e-2
    assert abs(ours - reference) <= tolerance * max(1.0, abs(reference)), (name, ours, reference)

    def reference_step() -> None:
        trainer.optimizer.zero_grad()
        with autocast(device, precision):
            loss = reference_loss(method, images, labels)
        loss.backward()
        trainer.optimizer.step()

    reset_peak(device)
    times = time_alternating(
        {"calprompt": lambda: trainer._step(None, images, labels, (0, 0), update=True), "reference": reference_step},
        steps,
        device,
        summary=statistics.median,
    )
    t_ours, t_ref = times["calprompt"], times["reference"]
    print(
        f"| {name} | {method.num_trainable_parameters():,} | {t_ours * 1000:,.0f} ms | {t_ref * 1000:,.0f} ms | "
        f"{t_ref / t_ours:.2f}x | {ours:.5f} vs {reference:.5f} | {peak_memory_mb(device):,.0f} MB |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--backbone", default="ViT-B-16", help="ViT-B-16 (random init) or toy")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    add_device_arguments(parser)
    args = parser.parse_args()
    apply_threads(args)
    backbone = load_clip(args.backbone, device=args.device)
    names = (TOY_CLASSNAMES if args.backbone == "toy" else REAL_CLASSNAMES)[: args.classes]
    print(describe(args.device, args.precision))
    print(f"{args.backbone}, {len(names)} classes, batch {args.batch}, median of {args.steps} alternating steps after")
    print("one warm-up, objective CE\n")
    columns = "method | parameters | calprompt step | reference-style step | ratio | loss (same)"
    print(f"| {columns} | {memory_kind(args.device)} |")
    print("|---|---|---|---|---|---|---|")
    for name in args.methods:
        bench(backbone, name, names, args.batch, args.steps, args.device, args.precision)


if __name__ == "__main__":
    main()
