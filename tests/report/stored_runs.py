"""Synthetic stored runs for the report tests: real evaluation reports of seeded random logits."""

from __future__ import annotations

import zlib
from pathlib import Path
from types import SimpleNamespace

import torch

from calprompt.metrics import evaluate

SPLITS = ("base", "novel", "base+ts", "novel+ts", "novel+dac", "novel+ts+dac")


def report(seed: int, sharpness: float = 3.0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 8, (300,), generator=generator)
    logits = torch.randn(300, 8, generator=generator)
    logits[torch.arange(300), labels] += 1.5
    return evaluate(sharpness * logits, labels).to_dict()


def stored_run(
    dataset: str, method: str, calibration: str, seed: int, from_recipe: tuple[str, ...] = (), **config
) -> SimpleNamespace:
    """A finished run as the store reads it; its ``row`` holds what a run records as its row-defining settings:
    every setting but the dataset and seed, less ``from_recipe`` (values the run's recipe gave it)."""
    key = zlib.crc32(f"{dataset}/{method}/{calibration}/{seed}".encode()) % 100_000
    metrics = {split: report(key + i) for i, split in enumerate(SPLITS)}
    full = {
        "dataset": dataset,
        "method": method,
        "calibration": calibration,
        "seed": seed,
        "recipe": "fast",
        "protocol": "base2novel",
        "shots": 16,
        "method_options": {},
        **config,
    }
    row = {k: v for k, v in full.items() if k not in ("dataset", "seed", "method_options", *from_recipe)}
    run_id = zlib.crc32(repr(sorted(full.items())).encode())  # one directory per config, as a store keys its runs
    return SimpleNamespace(path=Path(f"/store/runs/{run_id:08x}"), config=full, metrics=metrics, row=row)


def grid_runs(datasets=("toy", "toy-texture"), seeds=(1, 2, 3)) -> list[SimpleNamespace]:
    rows = (("zeroshot", "none"), ("coop", "none"), ("coop", "ours"))
    return [stored_run(d, m, c, s) for d in datasets for m, c in rows for s in seeds]
