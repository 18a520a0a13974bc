"""CoOp + ours: one training step of calprompt vs a step in the style of the reference code, side by side.

Reference style (what the published code does every step): encode the batch's images with the frozen image encoder,
re-encode the frozen zero-shot class prompts and recompute their moments, and run the prompted text encoder over
all 77 token positions. calprompt: cached frozen image features, zero-shot moments computed once, text encoder run
on the first max_eot + 1 positions only. Both compute the same loss (checked below); image decoding and augmentation,
which the reference also pays per step, are left out, so the ratio is conservative.

Usage: python benchmarks/bench_cached_training.py [--steps N] [--skip-vit]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from calprompt.calibration import build_objective, text_moments
from calprompt.clip import ClipBackbone, load_clip
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.data import load_dataset
from calprompt.methods import build_method

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# 50 base classes of fine-grained-looking names for real CLIP; the toy backbone gets the toy world's 48 class names
# (its checkpoint stores only the toy world's token embeddings).
REAL_CLASSNAMES = [
    f"{a} {b}"
    for a in ("red", "dark green", "pale blue", "golden", "striped")
    for b in (
        "tabby cat",
        "sea or lake",
        "boeing 737",
        "annual crop land",
        "apple pie",
        "tench",
        "mountain bike",
        "cliff",
        "exterior balcony",
        "daisy",
    )
]


def toy_backbone() -> tuple[ClipBackbone, str]:
    try:
        return load_clip("toy"), "toy (shipped checkpoint)"
    except FileNotFoundError:
        import open_clip

        from calprompt.clip import wrap_open_clip_model
        from calprompt.toy.backbone import TOY_PREPROCESS
        from calprompt.toy.model import TOY_CLIP_CONFIG

        model = open_clip.CLIP(**TOY_CLIP_CONFIG).eval()
        return wrap_open_clip_model(model, name="toy-random", preprocess=TOY_PREPROCESS), "toy architecture, random"


class ReferenceStyleStep:
    """A naive step: images encoded, frozen text re-encoded, all 77 positions, moments recomputed."""

    def __init__(self, backbone: ClipBackbone, method, template: str, classnames: list[str]) -> None:
        self.backbone, self.method, self.classnames = backbone, method, classnames
        self.zs_ids = backbone.tokenize([template.format(n) for n in classnames])
        self.ids = backbone.tokenize([f"X X X X {n}." for n in classnames])  # full context length
        with torch.no_grad():
            self.embeddings = backbone.embed_tokens(self.ids)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, objective) -> torch.Tensor:
        backbone = self.backbone
        image_features = F.normalize(backbone.encode_image(images), dim=-1)
        with torch.no_grad():
            frozen = F.normalize(backbone.encode_text(self.zs_ids, truncate=False), dim=-1)
        n = self.method.ctx.shape[0]
        prompts = torch.cat(
            [self.embeddings[:, :1], self.method.ctx.expand(len(self.classnames), -1, -1), self.embeddings[:, 1 + n :]],
            dim=1,
        )
        text = F.normalize(backbone.encode_text_embeddings(prompts, self.ids, truncate=False), dim=-1)
        logits = backbone.logit_scale * image_features @ text.t()
        loss, _ = objective(logits=logits, labels=labels, text_features=text, zs_text_moments=text_moments(frozen))
        return loss


def time_steps(step, steps: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def bench(backbone: ClipBackbone, label: str, classnames: list[str], steps: int, batch: int = 32) -> None:
    torch.manual_seed(0)
    size = backbone.preprocess.image_size
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, len(classnames), (batch,))
    template = "a photo of a {}."
    objective = build_objective("ours")
    method = build_method("coop", backbone, classnames)
    optimizer = torch.optim.SGD([method.ctx], lr=0.002, momentum=0.9)
    reference = ReferenceStyleStep(backbone, method, template, classnames)

    with torch.no_grad():
        cached = backbone.encode_image(images)  # what the feature cache holds for this batch
    zs_moments = text_moments(zero_shot_text_features(backbone, classnames, template))

    def ours_loss() -> torch.Tensor:
        out = method(image_features=cached)
        loss, _ = objective(
            logits=out.logits, labels=labels, text_features=out.text_features, zs_text_moments=zs_moments
        )
        return loss

    with torch.no_grad():
        a, b = ours_loss().item(), reference.loss(images, labels, objective).item()
    assert abs(a - b) <= 1e-3 * max(1.0, abs(a)), (a, b)

    def step(loss_fn):
        def run() -> None:
            optimizer.zero_grad()
            loss_fn().backward()
            optimizer.step()

        return run

    t_ours = time_steps(step(ours_loss), steps)
    t_ref = time_steps(step(lambda: reference.loss(images, labels, objective)), steps)
    max_eot = int(method.prompts.ids.argmax(-1).max())
    print(
        f"{label}: {len(classnames)} classes, batch {batch}, text positions {max_eot + 1} vs "
        f"{backbone.context_length}, same loss ({a:.5f} vs {b:.5f})"
    )
    print(f"  reference-style step: {t_ref * 1000:9.1f} ms")
    print(f"  calprompt step      : {t_ours * 1000:9.1f} ms")
    print(f"  speed-up            : {t_ref / t_ours:9.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip-vit", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    backbone, label = toy_backbone()
    bench(backbone, label, list(load_dataset("toy").classnames), args.steps)
    if not args.skip_vit:
        bench(load_clip("ViT-B-16"), "ViT-B-16 (random init)", REAL_CLASSNAMES, max(1, args.steps // 5))


if __name__ == "__main__":
    main()
