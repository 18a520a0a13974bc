"""The demo: zero-shot CLIP, CoOp and CoOp + ours on the embedded toy world, with a table and reliability diagrams.

Runs the real pipeline (tokenizer, open_clip architecture, prompt tuning, calibration, metrics) on two CPU cores in
a few minutes; only the dataset and backbone names differ from a run on real CLIP and benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calprompt.clip import load_clip
from calprompt.experiments.config import RunConfig
from calprompt.experiments.store import ResultsStore
from calprompt.metrics import EvaluationReport
from calprompt.report import base_novel_table, plot_reliability_diagrams

# (label, method, calibration objective)
DEMO_RUNS: tuple[tuple[str, str, str], ...] = (
    ("zero-shot CLIP", "zeroshot", "none"),
    ("CoOp", "coop", "none"),
    ("CoOp + ours", "coop", "ours"),
)


@dataclass
class DemoResult:
    table: str
    figures: list[Path]
    metrics: dict[str, dict[str, Any]]


def run_demo(
    out_dir: str | Path,
    *,
    dataset: str = "toy",
    seed: int = 1,
    recipe: str = "fast",
    backbone: str = "toy",
    pretrained: str | None = None,
    epochs: int | None = None,
    progress: Callable | None = None,
) -> DemoResult:
    """Train and evaluate the demo runs into ``out_dir`` (re-running resumes), then write the table and figures.

    ``epochs`` overrides the recipe's (smoke tests).
    """
    out = Path(out_dir)
    store = ResultsStore(out)  # one directory per config hash: another option never meets a run of other options
    clip = load_clip(backbone, pretrained)
    metrics: dict[str, dict[str, Any]] = {}
    for label, method, calibration in DEMO_RUNS:
        config = RunConfig(
            dataset=dataset,
            method=method,
            calibration=calibration,
            seed=seed,
            recipe=recipe,
            backbone=backbone,
            pretrained=pretrained,
            epochs=None if method == "zeroshot" else epochs,
        )
        metrics[label] = store.run(config, backbone=clip, progress=progress).metrics
    table = base_novel_table({label: [m] for label, m in metrics.items()})
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    figures = []
    for split in ("base", "novel"):
        reports = {label: EvaluationReport.from_dict(m[split]) for label, m in metrics.items() if m.get(split)}
        if reports:
            path = out / f"reliability-{split}.png"
            figures.append(plot_reliability_diagrams(reports, path, title=f"{dataset}: {split} classes"))
    return DemoResult(table, figures, metrics)
