"""A local grid of runs (datasets x methods/calibrations x seeds) that skips finished runs and tabulates the results.

The runs live in a `ResultsStore` under ``out`` (``out/runs/<run_id>``): a run finished with the same identity (config,
data fingerprint, weights) is not repeated, and an interrupted one resumes from its checkpoint, so the grid can be
stopped and restarted at any time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from calprompt._validation import fail
from calprompt.clip import ClipBackbone, load_clip
from calprompt.experiments.config import RunConfig
from calprompt.experiments.run import run_experiment
from calprompt.experiments.store import ResultsStore
from calprompt.report.tables import base_novel_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridEntry:
    """One row of the table: a label and the method/calibration it runs."""

    label: str
    method: str
    calibration: str


def parse_entries(specs: Sequence[str]) -> list[GridEntry]:
    """``["zeroshot:none", "coop:ours"]`` -> entries labelled "zeroshot", "coop + ours" (``none`` is left out)."""
    entries = []
    for spec in specs:
        method, sep, calibration = spec.partition(":")
        if not method:
            fail("run", "METHOD or METHOD:CALIBRATION, e.g. coop:ours", spec)
        calibration = calibration if sep else "none"
        label = method if calibration == "none" else f"{method} + {calibration}"
        entries.append(GridEntry(label, method, calibration))
    return entries


def run_grid(
    base: RunConfig,
    datasets: Sequence[str],
    entries: Sequence[GridEntry],
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    backbone: ClipBackbone | None = None,
    progress: Callable | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Run every (dataset, entry, seed) not finished yet; returns ``metrics[dataset][label] = [metrics per seed]``."""
    store = ResultsStore(out_dir)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for dataset in datasets:
        for entry in entries:
            for seed in seeds:
                config = replace(base, dataset=dataset, method=entry.method, calibration=entry.calibration, seed=seed)
                metrics = store.finished(config)
                if metrics is None:
                    if backbone is None:
                        backbone = load_clip(base.backbone, base.pretrained, device=base.device)
                    logger.info("Running %s / %s / seed %d", dataset, entry.label, seed)
                    run_dir = store.run_dir(config)
                    metrics = run_experiment(config, run_dir, backbone=backbone, progress=progress).metrics
                results.setdefault(dataset, {}).setdefault(entry.label, []).append(metrics)
    return results


def grid_tables(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """One markdown table per dataset, plus the average over datasets (per-seed averages, then mean ± std)."""
    sections = [f"### {dataset}\n\n{base_novel_table(rows)}" for dataset, rows in results.items()]
    if len(results) > 1:
        sections.append(f"### average over {len(results)} datasets\n\n{base_novel_table(_average(results))}")
    return "\n\n".join(sections) + "\n"


def _average(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Per label and seed index, the mean of each metric over datasets (a pseudo-run per seed)."""
    datasets = list(results.values())
    averaged: dict[str, list[dict[str, Any]]] = {}
    for label in datasets[0]:
        per_seed = zip(*(rows[label] for rows in datasets), strict=True)
        runs = []
        for seed_runs in per_seed:
            run: dict[str, Any] = {}
            for split in ("base", "novel"):
                if all(r.get(split) for r in seed_runs):
                    run[split] = {
                        key: sum(r[split][key] for r in seed_runs) / len(seed_runs) for key in ("accuracy", "ece")
                    }
            runs.append(run)
        averaged[label] = runs
    return averaged
