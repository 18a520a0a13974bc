"""The demo: a base-to-novel sweep on the embedded toy world, every registered method with the train-time
calibrations and post-hoc TS / DAC, then the report (tables, reliability diagrams, one HTML file).

It runs the real pipeline (tokenizer, open_clip architecture, prompt tuning, calibration, metrics, sweep, store,
report) on two CPU cores; only the dataset and backbone names differ from the paper's grid on real CLIP. The runs
are the shipped sweep files ``demo`` and ``demo-quick``; methods registered later join by themselves when they have
a toy recipe (the others are skipped with a note).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calprompt.experiments.failures import iter_failures
from calprompt.experiments.store import ResultsStore
from calprompt.experiments.sweep import SweepPlan, SweepSummary, load_sweep, plan_sweep, run_sweep
from calprompt.report.build import ReportFiles, write_report


@dataclass
class DemoResult:
    report: ReportFiles
    summary: SweepSummary
    notes: list[str]

    @property
    def table(self) -> str:
        """The headline table and the domain-shift tables (Markdown), as the demo prints them."""
        tables = [self.report.tables[0], *(t for t in self.report.tables if t.title.startswith("transfer"))]
        return "\n\n".join(table.to_markdown() for table in tables)


def plan_demo(out_dir: str | Path, *, quick: bool = False, overrides: Mapping[str, Any] | None = None) -> SweepPlan:
    """The demo sweep against the store ``out_dir``; ``overrides`` set base fields of every run (smoke tests)."""
    spec = load_sweep("demo-quick" if quick else "demo").with_base(overrides or {})
    return plan_sweep(spec, ResultsStore(out_dir))


def demo_report(plan: SweepPlan, summary: SweepSummary) -> DemoResult:
    """Write the report of the demo's runs into ``<store>/report`` (other runs of the store are left out)."""
    wanted = {run.run_id for run in plan.runs}
    runs = [run for run in plan.store.iter_runs() if run.path.name in wanted]
    failures = [failure for failure in iter_failures(plan.store.root) if failure.run_id in wanted]
    title = f"calprompt demo ({plan.spec.description})"
    files = write_report(runs, plan.store.root / "report", failures=failures, title=title)
    return DemoResult(files, summary, plan.notes)


def run_demo(
    out_dir: str | Path,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
    executor: Any = None,
) -> DemoResult:
    """Run the demo sweep into the store ``out_dir`` (finished runs are kept) and write its report."""
    plan = plan_demo(out_dir, quick=quick, overrides=overrides)
    return demo_report(plan, run_sweep(plan, executor))
