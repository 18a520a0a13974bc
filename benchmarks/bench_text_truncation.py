"""Exact context truncation: ViT-B-16 text encoding of 100 class prompts, 77 tokens vs the first max_eot + 1.

Both paths run side by side in this process on random-init weights (speed does not depend on the values).
Prints the max abs difference (exactness) and the speed-up ratio.
"""

from __future__ import annotations

import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from calprompt.clip import load_clip

# 100 class names of realistic lengths (single words to multi-word fine-grained names).
WORDS = [
    "red",
    "tailed",
    "hawk",
    "boeing",
    "737",
    "sea",
    "lake",
    "apply",
    "eye",
    "makeup",
    "golden",
    "retriever",
    "exterior",
    "balcony",
    "annual",
    "crop",
    "land",
    "american",
    "pit",
    "bull",
    "terrier",
    "cheese",
    "plate",
]


def class_names(n: int = 100) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    names = []
    for _ in range(n):
        length = int(torch.randint(1, 5, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        names.append(" ".join(WORDS[i] for i in picks))
    return names


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    backbone = load_clip("ViT-B-16")
    ids = backbone.tokenize([f"a photo of a {name}." for name in class_names()])
    max_eot = int(backbone.eot_positions(ids).max())
    with torch.no_grad():
        full = backbone.encode_text(ids, truncate=False)
        short = backbone.encode_text(ids, truncate=True)
        diff = (full - short).abs().max().item()
        t_full = best_time(lambda: backbone.encode_text(ids, truncate=False), repeats=3)
        t_short = best_time(lambda: backbone.encode_text(ids, truncate=True), repeats=3)
    print(f"ViT-B-16 text encoder, 100 prompts, {torch.get_num_threads()} threads, max EOT position {max_eot}")
    print(f"full 77 tokens : {t_full * 1000:8.1f} ms")
    print(f"truncated {max_eot + 1:>3}  : {t_short * 1000:8.1f} ms")
    print(f"max abs diff   : {diff:.2e}")
    print(f"speed-up       : {t_full / t_short:.2f}x")


if __name__ == "__main__":
    main()
