"""Test-time prompt tuning (TPT, one step, 64 views): calprompt's batched tuner vs a reference-style loop.

The reference side does what the public TPT code does, one image at a time: its 64 views through the image encoder,
the C prompts through the text encoder at all 77 positions with a gradient, the 10 % most confident views'
averaged entropy, one AdamW step on a fresh copy of the context, then the test view encoded *again* and the C prompts
encoded again for the prediction. calprompt's side tunes all the images at once (`BatchedTestTimeTuner`): each
image's views encoded once, the text passes truncated with each image's shared prefix computed once.

Each (case, side) runs in its own process (peak memory is a process high-water mark on the CPU) on the same seeded
views and prints per-image time, peak memory and arithmetic (GFLOP of view encoding and of text passes, counted by
`torch.utils.flop_counter`); the parent prints the time ratio next to the FLOP ratio (its bound: both sides must
encode the 64 views) and the max |logit| difference of the two sides' predictions. Usage::

    python benchmarks/bench_test_time.py [--cases toy,vit100,vit1000] [--images toy=64,vit100=2,vit1000=1]
        [--device cuda --precision bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time

import torch
import torch.nn.functional as F
from _common import (
    STEADY_HEAP,
    add_device_arguments,
    apply_threads,
    autocast,
    class_names,
    describe,
    memory_kind,
    peak_memory_mb,
    reset_peak,
    run_child,
    sync,
)

VIEWS, FRACTION, LR = 64, 0.1, 5e-3
CASES = {"toy": ("toy", None), "vit100": ("ViT-B-16", 100), "vit1000": ("ViT-B-16", 1000)}


def setup(case: str, device: str):
    from calprompt.clip import load_clip
    from calprompt.data import load_dataset
    from calprompt.methods import build_method

    backbone_name, classes = CASES[case]
    torch.manual_seed(0)
    backbone = load_clip(backbone_name, device=device)
    names = list(load_dataset("toy").classnames) if classes is None else class_names(classes)
    method = build_method("coop", backbone, names)
    return backbone, method, names


def seeded_views(backbone, images: int, device: str) -> torch.Tensor:
    size = backbone.preprocess.image_size
    g = torch.Generator().manual_seed(1)
    return torch.randn(images, VIEWS, 3, size, size, generator=g).to(device)  # (I, N, 3, S, S)


def reference_side(backbone, method, names, views, device, precision, count, chunk=0) -> tuple[torch.Tensor, dict]:
    """The public code's per-image loop, all 77 positions, the test view encoded again. ``chunk`` > 0: the text
    pass in chunks of that many prompts, each recomputed in backward (the public code keeps every activation, which
    at 1,000 classes is more memory than a 24 GB machine has; the recompute adds one text forward to the count)."""
    from torch.utils.checkpoint import checkpoint

    from calprompt.conventions import clean_classname
    from tests.test_time_oracles import tpt_avg_entropy, tpt_select_confident_samples

    backbone.text_memory_budget_mb = 1e9  # the public code keeps every activation for backward
    backbone.share_prefixes, backbone.length_buckets = False, False
    n_ctx = method.ctx.shape[0]
    ids = backbone.tokenize([f"{' '.join(['X'] * n_ctx)} {clean_classname(n)}." for n in names])  # (C, 77)
    with torch.no_grad():
        embedded = backbone.embed_tokens(ids)
    prefix, suffix = embedded[:, :1], embedded[:, 1 + n_ctx :]
    initial = method.ctx.detach().clone()

    def encode_rows(ctx: torch.Tensor, rows: slice) -> torch.Tensor:
        count_rows = len(range(*rows.indices(len(names))))
        prompts = torch.cat([prefix[rows], ctx.to(prefix.dtype).expand(count_rows, -1, -1), suffix[rows]], dim=1)
        return backbone.encode_text_embeddings(prompts, ids[rows], truncate=False).float()

    def encode_text(ctx: torch.Tensor) -> torch.Tensor:
        if not chunk or chunk >= len(names):
            return F.normalize(encode_rows(ctx, slice(None)), dim=-1)
        parts = []
        for start in range(0, len(names), chunk):
            rows = slice(start, start + chunk)
            grad = torch.is_grad_enabled()
            parts.append(checkpoint(encode_rows, ctx, rows, use_reentrant=False) if grad else encode_rows(ctx, rows))
        return F.normalize(torch.cat(parts), dim=-1)

    predictions = []
    scale = backbone.logit_scale
    for image_views in views:
        ctx = torch.nn.Parameter(initial.clone())
        optimizer = torch.optim.AdamW([ctx], lr=LR)
        with count("views"), torch.no_grad(), autocast(device, precision):
            features = F.normalize(backbone.encode_image(image_views).float(), dim=-1)
        with count("text"), autocast(device, precision):
            output = scale * features @ encode_text(ctx).t()
        kept, _ = tpt_select_confident_samples(output, FRACTION)
        loss = tpt_avg_entropy(kept)
        with count("text"):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with count("views"), torch.no_grad(), autocast(device, precision):
            test_view = F.normalize(backbone.encode_image(image_views[:1]).float(), dim=-1)
        with count("text"), torch.no_grad(), autocast(device, precision):
            predictions.append((scale * test_view @ encode_text(ctx).t())[0])
    return torch.stack(predictions), {}


def calprompt_side(backbone, method, names, views, device, precision, count) -> tuple[torch.Tensor, dict]:
    """All images at once: views encoded once each, the batched tuner."""
    from calprompt.calibration.objective import CalibrationObjective, Term
    from calprompt.engine.test_time import BatchedTestTimeTuner, TestTimeSettings

    settings = TestTimeSettings(views=VIEWS, confident_fraction=FRACTION, lr=LR)
    with count("text"):  # the initial prompt's features: once per class list
        tuner = BatchedTestTimeTuner(method, CalibrationObjective(Term("tpt_entropy")), settings, precision=precision)
    with count("views"), torch.no_grad(), autocast(device, precision):
        features = torch.stack([F.normalize(backbone.encode_image(v).float(), dim=-1) for v in views])
    with count("text"):
        logits = tuner.tune(features).logits
    return logits, {}


def child(args: argparse.Namespace) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    backbone, method, names = setup(args.case, args.device)
    count = int(args.images)
    views = seeded_views(backbone, count, args.device)
    flops = {"views": 0, "text": 0}

    class Count:
        """``with count("views"):`` adds the FLOPs of the block to that part."""

        def __call__(self, part: str):
            class Phase:
                def __enter__(self):
                    self.mode = FlopCounterMode(display=False)
                    self.mode.__enter__()

                def __exit__(self, *exc):
                    self.mode.__exit__(*exc)
                    flops[part] += self.mode.get_total_flops()

            return Phase()

    side = calprompt_side
    if args.side == "reference":
        side = functools.partial(reference_side, chunk=args.reference_chunk)
    # FLOPs are counted on a first pass over the first image, which also warms up; the timed pass is not counted
    # (the counter's per-operation overhead is larger than a toy kernel and would hide the real ratio there).
    # Per-image arithmetic does not depend on how many images are tuned together, except the initial prompt's
    # features (once per class list), counted here for the one image.
    side(backbone, method, names, views[:1], args.device, args.precision, Count())
    counted = dict(flops)
    reset_peak(args.device)
    sync(args.device)
    start = time.perf_counter()
    logits, _ = side(backbone, method, names, views, args.device, args.precision, lambda part: contextlib.nullcontext())
    sync(args.device)
    seconds = (time.perf_counter() - start) / count
    print(
        json.dumps(
            {
                "seconds_per_image": seconds,
                "peak_mb": peak_memory_mb(args.device),
                "gflop_views": counted["views"] / 1e9,
                "gflop_text": counted["text"] / 1e9,
                "logits": logits.float().cpu().tolist(),
            }
        )
    )


def images_per_case(text: str, cases: list[str]) -> dict[str, int]:
    """``--images``: one count for every case, or ``CASE=N`` pairs naming each case run."""
    if text.isdigit():
        return dict.fromkeys(cases, int(text))
    given = dict(part.split("=", 1) for part in text.split(","))
    missing = [case for case in cases if case not in given]
    if missing:
        raise SystemExit(f"--images: no count for {missing}; give N or CASE=N for each of --cases")
    return {case: int(given[case]) for case in cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--cases", default="toy,vit100,vit1000", help=f"comma-separated among {list(CASES)}")
    parser.add_argument(
        "--images",
        default="toy=64,vit100=2,vit1000=1",
        help="test images per case, compared per image: N for every case or CASE=N,... (the toy's point is many "
        "images at once)",
    )
    parser.add_argument(
        "--reference-chunk",
        type=int,
        default=100,
        help="a case with more classes than this runs the reference's text pass in chunks of this many prompts, "
        "recomputed in backward (0: always whole, as the public code; 1,000 classes whole keep ~35 GB of "
        "activations)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", default="toy", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="calprompt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    passed = apply_threads(args)
    if args.child:
        child(args)
        return
    cases = args.cases.split(",")
    images = images_per_case(args.images, cases)
    print(describe(args.device, args.precision), f"| {VIEWS} views, images: {args.images}")
    print(f"memory: {memory_kind(args.device)} (ViT-B-16: glibc mmap threshold fixed: live memory, not heap growth)")
    print("GFLOP per image; ratios: reference / calprompt")
    if args.reference_chunk:
        print(f"reference text pass over {args.reference_chunk} classes: in chunks of that many, recomputed")
    print("case      side        s/image  peak MB  GFLOP views  GFLOP text  | time ratio  FLOP bound  of bound", end="")
    print("  max|dlogit|")
    for case in cases:
        rows = {}
        for side in ("reference", "calprompt"):
            common = ["--device", args.device, "--precision", args.precision, "--images", str(images[case])]
            common += ["--reference-chunk", str(args.reference_chunk)]
            child_args = ["--child", "--case", case, "--side", side, *common, *passed]
            # ViT-B-16: glibc's heap fixed (see STEADY_HEAP; its page faults are ~1 % of these kernels); the toy's
            # sub-megabyte tensors would spend more time in page faults than in arithmetic, and fit either way.
            env = STEADY_HEAP if CASES[case][1] else None
            rows[side] = run_child(__file__, child_args, timeout=4 * 3600, env=env)
        ref, ours = rows["reference"], rows["calprompt"]
        time_ratio = ref["seconds_per_image"] / ours["seconds_per_image"]
        bound = (ref["gflop_views"] + ref["gflop_text"]) / (ours["gflop_views"] + ours["gflop_text"])
        difference = (torch.tensor(ref["logits"]) - torch.tensor(ours["logits"])).abs().max().item()
        for side, row in rows.items():
            line = (
                f"{case:9s} {side:10s} {row['seconds_per_image']:8.3f} {row['peak_mb']:8.0f} "
                f"{row['gflop_views']:12.2f} {row['gflop_text']:11.2f}"
            )
            if side == "calprompt":
                line += f"  | {time_ratio:9.2f}x {bound:10.2f}x {time_ratio / bound:8.0%} {difference:12.2e}"
            print(line)


if __name__ == "__main__":
    main()
