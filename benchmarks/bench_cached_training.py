"""CoOp + ours: one training step of calprompt vs a step in the style of the reference code, side by side.

Reference style (what the published code does every step): encode the batch's images with the frozen image encoder,
re-encode the frozen zero-shot class prompts and recompute their moments, and run the prompted text encoder over
all 77 token positions, all through open_clip's own modules (none of calprompt's encoder levers). calprompt:
cached frozen image features, zero-shot moments computed once, text encoder run on the first max_eot + 1 positions
only. Both compute the same loss (checked below); image decoding and augmentation,
which the reference also pays per step, are left out, so the ratio is conservative.

The two steps alternate (one of each per round, best of the rounds), so a machine shared with other work slows
both alike. The calprompt step runs the prompted text encoder with every exact lever it has (truncation, the shared
prefix computed once, the last block at the end-of-text positions only, the memory budget).

A ViT-B-16-SigLIP-sized model (random init) runs the same comparison: its bidirectional text tower is never
truncated and gets no shared prefix (neither is exact there), so its ratio comes from the cached image features, the
zero-shot moments computed once and the last block at the read position only.

Usage: python benchmarks/bench_cached_training.py [--steps N] [--skip-vit] [--skip-siglip] [--device cpu]
       [--precision fp32]
"""

from __future__ import annotations

import argparse

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

from calprompt.calibration import build_objective, text_moments
from calprompt.clip import ClipBackbone, load_clip
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.data import load_dataset
from calprompt.methods import build_method

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


def toy_backbone(device: str) -> tuple[ClipBackbone, str]:
    try:
        return load_clip("toy", device=device), "toy (shipped checkpoint)"
    except FileNotFoundError:
        import open_clip

        from calprompt.clip import wrap_open_clip_model
        from calprompt.toy.backbone import TOY_PREPROCESS
        from calprompt.toy.model import TOY_CLIP_CONFIG

        model = open_clip.CLIP(**TOY_CLIP_CONFIG).eval()
        backbone = wrap_open_clip_model(model, name="toy-random", preprocess=TOY_PREPROCESS).to(device)
        return backbone, "toy architecture, random"


def siglip_backbone(device: str) -> ClipBackbone:
    """open_clip's ViT-B-16-SigLIP architecture at random init (bidirectional text read at the last position, timm
    ViT with attention pooling). Its Gemma tokenizer is on the hub only, so the text tower gets CLIP's vocabulary:
    the same compute per position, 64 positions as in SigLIP."""
    import copy

    import open_clip

    from calprompt.clip import wrap_open_clip_model

    cfg = copy.deepcopy(open_clip.get_model_config("ViT-B-16-SigLIP"))
    cfg.pop("custom_text")
    cfg["text_cfg"].update(vocab_size=49408, hf_tokenizer_name=None, tokenizer_kwargs=None)
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(**cfg).eval()
    return wrap_open_clip_model(model, name="ViT-B-16-SigLIP-random").to(device)


class ReferenceStyleStep:
    """A naive step: images encoded, frozen text re-encoded, all 77 positions, moments recomputed."""

    def __init__(self, backbone: ClipBackbone, method, template: str, classnames: list[str]) -> None:
        self.backbone, self.method, self.classnames = backbone, method, classnames
        self.zs_ids = backbone.tokenize([template.format(n) for n in classnames])
        self.ids = backbone.tokenize([f"X X X X {n}." for n in classnames])  # full context length
        with torch.no_grad():
            self.embeddings = backbone.embed_tokens(self.ids)

    def text_features(self, embeddings: torch.Tensor) -> torch.Tensor:
        """open_clip's own text tower on token embeddings, every position (what CoOp's text encoder runs)."""
        model = self.backbone.text_tower  # open_clip's CLIP, or a CustomTextCLIP's text tower (SigLIP)
        x = model.transformer(embeddings + model.positional_embedding, attn_mask=model.attn_mask)
        x = model.ln_final(x)[torch.arange(x.shape[0]), self.backbone.eot_positions(self.ids)]
        return (
            model.text_projection(x)
            if isinstance(model.text_projection, torch.nn.Linear)
            else x @ model.text_projection
        )

    def loss(self, images: torch.Tensor, labels: torch.Tensor, objective) -> torch.Tensor:
        backbone = self.backbone
        image_features = F.normalize(backbone.model.encode_image(images), dim=-1)
        with torch.no_grad():
            frozen = F.normalize(backbone.model.encode_text(self.zs_ids), dim=-1)
        n = self.method.ctx.shape[0]
        prompts = torch.cat(
            [self.embeddings[:, :1], self.method.ctx.expand(len(self.classnames), -1, -1), self.embeddings[:, 1 + n :]],
            dim=1,
        )
        text = F.normalize(self.text_features(prompts), dim=-1)
        logits = backbone.logit_scale * image_features @ text.t()
        loss, _ = objective(logits=logits, labels=labels, text_features=text, zs_text_moments=text_moments(frozen))
        return loss


def bench(
    backbone: ClipBackbone, label: str, classnames: list[str], steps: int, device: str, precision: str, batch: int = 32
) -> dict[str, float]:
    torch.manual_seed(0)
    size = backbone.preprocess.image_size
    images = torch.randn(batch, 3, size, size).to(device)
    labels = torch.randint(0, len(classnames), (batch,)).to(device)
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

    with torch.no_grad(), autocast(device, precision):
        a, b = ours_loss().item(), reference.loss(images, labels, objective).item()
    tolerance = 1e-3 if precision == "fp32" else 5e-2
    assert abs(a - b) <= tolerance * max(1.0, abs(a)), (a, b)

    def step(loss_fn):
        def run() -> None:
            optimizer.zero_grad()
            with autocast(device, precision):
                loss = loss_fn()
            loss.backward()
            optimizer.step()

        return run

    reset_peak(device)
    times = time_alternating(
        {"calprompt": step(ours_loss), "reference": step(lambda: reference.loss(images, labels, objective))},
        steps,
        device,
    )
    max_eot = int(backbone.eot_positions(method.prompts.ids).max())
    print(
        f"{label}: {len(classnames)} classes, batch {batch}, text positions {max_eot + 1} vs "
        f"{backbone.context_length}, same loss ({a:.5f} vs {b:.5f})"
    )
    print(f"  reference-style step: {times['reference'] * 1000:9.1f} ms")
    print(f"  calprompt step      : {times['calprompt'] * 1000:9.1f} ms")
    print(f"  speed-up            : {times['reference'] / times['calprompt']:9.1f}x")
    print(f"  {memory_kind(device)} so far: {peak_memory_mb(device):.0f} MB")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--steps", type=int, default=10, help="rounds (toy; ViT-B-16 runs a fifth of them)")
    parser.add_argument("--skip-vit", action="store_true")
    parser.add_argument("--skip-siglip", action="store_true")
    args = parser.parse_args()
    apply_threads(args)
    print(describe(args.device, args.precision))
    backbone, label = toy_backbone(args.device)
    rows = [
        (label, bench(backbone, label, list(load_dataset("toy").classnames), args.steps, args.device, args.precision))
    ]
    if not args.skip_vit:
        vit = load_clip("ViT-B-16", device=args.device)
        label = "ViT-B-16 (random init)"
        rows.append((label, bench(vit, label, REAL_CLASSNAMES, max(1, args.steps // 5), args.device, args.precision)))
    if not args.skip_siglip:
        label = "ViT-B-16-SigLIP (random init)"
        siglip = siglip_backbone(args.device)
        rows.append(
            (label, bench(siglip, label, REAL_CLASSNAMES, max(1, args.steps // 5), args.device, args.precision))
        )
    print("| backbone | calprompt step | reference-style step | ratio |")
    print("|---|---|---|---|")
    for label, times in rows:
        ours, ref = times["calprompt"], times["reference"]
        print(f"| {label} | {ours * 1000:.1f} ms | {ref * 1000:.1f} ms | {ref / ours:.1f}x |")


if __name__ == "__main__":
    main()
