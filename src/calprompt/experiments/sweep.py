"""Sweeps: a YAML file of runs (datasets x methods x calibrations x seeds x shots x any config field), planned against
a results store, then run by an executor (serial, a local process pool, or Ray).

A sweep file::

    name: toy-base2novel
    base:                       # every run starts from these RunConfig fields
      backbone: toy
      recipe: fast
    matrix:                     # the cartesian product of these lists (a scalar is a list of one)
      dataset: [toy, toy-texture]
      method: "*"               # every registered method that has a recipe for the dataset (class-specific ones,
                                # which cannot name novel classes, under protocol: all)
      calibration: [none, ours]
      seed: [1, 2, 3]
      method.n_ctx: [4]         # a dotted key sets one method option (calibration.KEY: one constant)
      variant:                  # values that are mappings set several fields together
        - {shots: 16, protocol: base2novel}
        - {shots: 4, protocol: all}
    exclude:                    # drop the matrix runs that match every key of one entry
      - {method: zeroshot}
    include:                    # extra runs, crossed with the matrix axes that set none of their fields
      - {method: zeroshot, calibration: none}
    resources: {cpus: 1, gpus: 0}   # per run, for the Ray executor (gpus default: 1 when device is cuda)

Planning is separate from running and reads nothing but the store's run directories: a finished run (same
identity: config, data and weights) is skipped, an unfinished one is resumed, and every config is validated before
any run starts.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calprompt._validation import fail
from calprompt.experiments.config import TEST_TIME_PROTOCOL, RunConfig, has_recipe
from calprompt.experiments.identity import run_id
from calprompt.experiments.settings import relative_to_file, run_config
from calprompt.experiments.store import ResultsStore, iter_failures

logger = logging.getLogger(__name__)

SWEEP_KEYS = ("name", "description", "base", "matrix", "include", "exclude", "resources")
EVERY_METHOD = "*"  # as the value of `method`: every registered method with a recipe for the run's dataset
_SHIPPED = Path(__file__).resolve().parent.parent / "sweeps"


@dataclass(frozen=True)
class Resources:
    """What one run asks of a Ray cluster; ``gpus=None`` means 1 for runs on a CUDA device, else 0."""

    cpus: float = 1.0
    gpus: float | None = None

    def for_config(self, config: RunConfig) -> tuple[float, float]:
        gpus = self.gpus if self.gpus is not None else (1.0 if config.device.startswith("cuda") else 0.0)
        return self.cpus, gpus


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file (see the module docstring)."""

    name: str
    base: dict[str, Any]
    matrix: dict[str, tuple[Any, ...]]
    include: tuple[dict[str, Any], ...] = ()
    exclude: tuple[dict[str, Any], ...] = ()
    resources: Resources = Resources()
    description: str = ""
    source: str = "<sweep>"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<sweep>") -> SweepSpec:
        if not isinstance(data, Mapping):
            fail(f"the sweep file {source}", "a mapping with keys among " + ", ".join(SWEEP_KEYS), type(data).__name__)
        unknown = sorted(set(data) - set(SWEEP_KEYS))
        if unknown:
            fail(f"the keys of sweep file {source}", f"among {', '.join(SWEEP_KEYS)}", unknown)
        base = _mapping(data.get("base", {}), f"{source}: base")
        matrix = {key: _values(value) for key, value in _mapping(data.get("matrix", {}), f"{source}: matrix").items()}
        include = tuple(_mapping(entry, f"{source}: include[{i}]") for i, entry in enumerate(data.get("include", [])))
        exclude = tuple(_mapping(entry, f"{source}: exclude[{i}]") for i, entry in enumerate(data.get("exclude", [])))
        resources = _mapping(data.get("resources", {}), f"{source}: resources")
        bad = sorted(set(resources) - {"cpus", "gpus"})
        if bad:
            fail(f"the keys of {source}: resources", "among cpus, gpus", bad)
        return cls(
            name=str(data.get("name") or Path(source).stem),
            base=dict(base),
            matrix=matrix,
            include=include,
            exclude=exclude,
            resources=Resources(**resources),
            description=str(data.get("description", "")),
            source=source,
        )

    def with_base(self, overrides: Mapping[str, Any]) -> SweepSpec:
        """The same sweep with some base fields set (e.g. ``root``, ``device`` from the command line; values may be
        text, converted by field type like ``calprompt train --set``)."""
        return SweepSpec(**{**self.__dict__, "base": {**copy.deepcopy(self.base), **overrides}})


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        fail(where, "a mapping of field name -> value", value)
    return value


def _values(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep file; a bare name (``paper-base2novel``) is looked up among the shipped sweep files."""
    import yaml  # lazy: only sweeps read YAML

    path = Path(path)
    if not path.exists() and (_SHIPPED / f"{path.name}.yaml").is_file():
        path = _SHIPPED / f"{path.name}.yaml"
    if not path.is_file():
        shipped = ", ".join(shipped_sweeps())
        raise FileNotFoundError(f"Sweep file {path} not found. Pass a YAML file, or one of the shipped: {shipped}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"Sweep file {path} is not valid YAML: {error}") from error
    if isinstance(data, dict) and isinstance(data.get("base"), dict):
        data["base"] = relative_to_file(data["base"], path)  # a relative root is relative to the file
    return SweepSpec.from_dict(data, str(path))


def shipped_sweeps() -> list[str]:
    """Names of the sweep files shipped with calprompt (``calprompt sweep NAME`` finds them)."""
    return sorted(path.stem for path in _SHIPPED.glob("*.yaml"))


# ---------------------------------------------------------------------------------------------------------------------
# Expansion
def _matches(run: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(run.get(key) in _values(value) for key, value in entry.items())


def _combine(axes: list[str], combo: tuple[Any, ...]) -> dict[str, Any]:
    """One run's overrides: an axis value that is a mapping sets several fields at once (its keys)."""
    run: dict[str, Any] = {}
    for axis, value in zip(axes, combo, strict=True):
        run.update(value if isinstance(value, Mapping) else {axis: value})
    return run


def _axis_keys(axis: str, values: tuple[Any, ...]) -> set[str]:
    """The fields an axis sets: its name, or the keys of its mapping values."""
    return {key for value in values for key in value} if all(isinstance(v, Mapping) for v in values) else {axis}


def expand(spec: SweepSpec, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The sweep's runs as override dicts (dotted keys), before merging over ``base``; duplicates are kept.

    ``method: "*"`` is expanded before ``exclude`` applies (so ``exclude: [{method: zeroshot}]`` works with it);
    methods it skips are described in ``notes``.
    """
    notes = [] if notes is None else notes
    axes = list(spec.matrix)
    runs = [_combine(axes, combo) for combo in itertools.product(*spec.matrix.values())]
    if not axes and spec.include:
        runs = []  # only the listed runs (an empty matrix alone is one run of the base config)
    runs = [run for raw in runs for run in _every_method(raw, spec.base, notes)]
    runs = [run for run in runs if not any(_matches(run, entry) for entry in spec.exclude)]
    for entry in spec.include:
        free = [axis for axis in axes if not _axis_keys(axis, spec.matrix[axis]) & set(entry)]
        fixed = {key: _values(value) for key, value in entry.items()}
        for combo in itertools.product(*(spec.matrix[a] for a in free), *fixed.values()):
            runs += _every_method(_combine([*free, *fixed], combo), spec.base, notes)
    return runs


def _every_method(run: dict[str, Any], base: Mapping[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """Expand ``method: "*"`` into every registered method with a recipe for the run's dataset (noting the others).

    A class-specific method (one weight per class) cannot name the unseen classes of a protocol such as
    base-to-novel: it is planned under ``protocol: all`` instead (noted), and reports mark its novel columns n/a.
    Its transfer targets with another number of classes are dropped (noted; one with as many classes is checked
    against the tuned class list when the run reads its data).
    """
    if run.get("method", base.get("method")) != EVERY_METHOD:
        return [run]
    from calprompt.experiments.protocols import EVERY_CLASS_PROTOCOL, get_protocol
    from calprompt.methods import available_methods, get_method

    dataset = run.get("dataset", base.get("dataset", RunConfig.dataset))
    recipe = run.get("recipe", base.get("recipe", RunConfig.recipe))
    protocol = run.get("protocol", base.get("protocol", RunConfig.protocol))
    explicit = all(run.get(k, base.get(k)) is not None for k in ("epochs", "batch_size", "lr"))
    expanded = []
    for method in available_methods():
        if explicit or has_recipe(recipe, method, dataset):
            planned = {**run, "method": method}
            if get_method(method).class_specific and get_protocol(protocol).evaluates_unseen_classes:
                planned["protocol"] = EVERY_CLASS_PROTOCOL
                note = (
                    f"planned class-specific method {method!r} under protocol {EVERY_CLASS_PROTOCOL!r} instead of "
                    f"{protocol!r}: it {get_method(method).class_specific_reason} and cannot name unseen classes "
                    "(reports mark its novel columns n/a)"
                )
                if note not in notes:
                    notes.append(note)
            if get_method(method).class_specific:
                planned.update(
                    _same_class_targets(method, dataset, run.get("eval_datasets", base.get("eval_datasets")), notes)
                )
            expanded.append(planned)
        else:
            note = f"skipped method {method!r} on {dataset}: it has no {recipe!r} recipe for this dataset"
            if note not in notes:
                notes.append(note)
    return expanded


def _same_class_targets(method: str, dataset: str, targets: Any, notes: list[str]) -> dict[str, Any]:
    """``{"eval_datasets": kept}`` without the targets whose registered class count differs from ``dataset``'s (a
    class-specific ``method`` cannot name their classes); ``{}`` when none is dropped."""
    from calprompt.data import get_dataset_spec

    if not isinstance(targets, list | tuple):
        return {}
    count = get_dataset_spec(dataset).num_classes
    kept = [
        t
        for t in targets
        if None in (count, get_dataset_spec(t).num_classes) or get_dataset_spec(t).num_classes == count
    ]
    dropped = [t for t in targets if t not in kept]
    if not dropped:
        return {}
    note = f"dropped transfer targets {dropped} of class-specific method {method!r}: their classes are not {dataset}'s"
    if note not in notes:
        notes.append(note)
    return {"eval_datasets": kept}


def build_config(base: Mapping[str, Any], overrides: Mapping[str, Any], source: str = "<sweep>") -> RunConfig:
    """``base`` with ``overrides`` as a resolved, typed, validated RunConfig; errors name the sweep and the run.

    Keys and values follow `calprompt.experiments.settings` (field names, ``method.KEY`` / ``method_options.KEY``
    for one option, text converted by the field's type).
    """
    try:
        return run_config(base=base, flags=overrides, source=source)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{source}: the run {dict(overrides)} is not valid: {error}") from error


def grid_spec(
    base: Mapping[str, Any], datasets: Sequence[str], runs: Sequence[tuple[str, str]], seeds: Sequence[int]
) -> SweepSpec:
    """The sweep of a grid: datasets x (method, calibration) rows x seeds over ``base`` fields, in that order."""
    rows = tuple({"method": method, "calibration": calibration} for method, calibration in runs)
    matrix = {"dataset": tuple(datasets), "run": rows, "seed": tuple(seeds)}
    return SweepSpec(name="grid", base=dict(base), matrix=matrix, source="calprompt grid")


def parse_runs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``["zeroshot", "coop:ours"]`` -> ``[("zeroshot", "none"), ("coop", "ours")]``."""
    runs = []
    for spec in specs:
        method, sep, calibration = spec.partition(":")
        if not method:
            fail("run", "METHOD or METHOD:CALIBRATION, e.g. coop:ours", spec)
        runs.append((method, calibration if sep else "none"))
    return runs


# ---------------------------------------------------------------------------------------------------------------------
# Planning
@dataclass(frozen=True)
class PlannedRun:
    config: RunConfig  # resolved
    run_id: str
    run_dir: Path
    finished: bool
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        c = self.config
        if c.protocol == TEST_TIME_PROTOCOL:  # trains on no shots; what it starts from tells its runs apart
            start = "zero-shot" if c.init_run is None else f"init {Path(c.init_run).name}"
            return f"{c.dataset} / TPT {c.method} + {c.calibration} / {start} / seed {c.seed}"
        return f"{c.dataset} / {c.method} + {c.calibration} / {c.shots} shots / seed {c.seed}"


@dataclass
class SweepPlan:
    spec: SweepSpec
    store: ResultsStore
    runs: list[PlannedRun]
    notes: list[str] = field(default_factory=list)
    failed_before: set[str] = field(default_factory=set)  # run ids with a recorded failure (retried)

    @property
    def pending(self) -> list[PlannedRun]:
        return [run for run in self.runs if not run.finished]

    @property
    def finished(self) -> list[PlannedRun]:
        return [run for run in self.runs if run.finished]


def plan_sweep(spec: SweepSpec, store: ResultsStore | str | Path) -> SweepPlan:
    """Validate every run of ``spec`` and find which are finished in ``store`` (no data is read for the others)."""
    store = store if isinstance(store, ResultsStore) else ResultsStore(store)
    notes: list[str] = []
    overrides = expand(spec, notes)
    runs, seen = [], set()
    for override in overrides:
        config = build_config(spec.base, override, spec.source)
        key = run_id(config)
        if key in seen:
            continue
        seen.add(key)
        run_dir = store.run_dir(config)
        finished = run_dir.is_dir() and store.finished(config) is not None
        runs.append(PlannedRun(config, key, run_dir, finished, *spec.resources.for_config(config)))
    if len(runs) < len(overrides):
        notes.append(f"{len(overrides) - len(runs)} duplicate run(s) of the sweep planned once")
    failed_before = {failure.run_id for failure in iter_failures(store.root)} & seen
    return SweepPlan(spec, store, runs, notes, failed_before)


# ---------------------------------------------------------------------------------------------------------------------
# Running
@dataclass
class SweepSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # run label -> error
    elsewhere: list[str] = field(default_factory=list)  # labels of runs another process was running (not failures)


def run_sweep(
    plan: SweepPlan,
    executor: Any = None,
    *,
    on_outcome: Callable[[Any, SweepSummary], None] | None = None,
    force: bool = False,
) -> SweepSummary:
    """Run the plan's unfinished runs with ``executor`` (default: serial), recording failures and going on;
    ``force`` runs every run of the plan again, finished ones included (each starts over).

    A run whose directory another process holds (another sweep running it) is skipped and listed in
    ``summary.elsewhere``, not counted as failed. ``on_outcome(outcome, summary)`` is called after each run (for a
    progress bar).
    """
    from calprompt.experiments.executors import RunTask, SerialExecutor

    executor = executor or SerialExecutor()
    summary = SweepSummary(skipped=0 if force else len(plan.finished))
    tasks = [
        RunTask(run.config.to_dict(), str(plan.store.root), run.run_id, run.label, run.cpus, run.gpus, force)
        for run in (plan.runs if force else plan.pending)
    ]
    for outcome in executor.map(tasks):
        if outcome.ok:
            summary.done += 1
        elif outcome.busy:
            summary.elsewhere.append(outcome.label)
            logger.info("Run %s is running in another process: skipped.", outcome.label)
        else:
            summary.failed += 1
            summary.errors[outcome.label] = outcome.error or ""
            logger.warning("Run %s failed: %s", outcome.label, outcome.error)
        if on_outcome is not None:
            on_outcome(outcome, summary)
    return summary


def iter_plan_lines(plan: SweepPlan) -> Iterator[str]:
    """A plain-text listing of the plan: each run with its status."""
    for run in plan.runs:
        status = "finished" if run.finished else ("failed before" if run.run_id in plan.failed_before else "to run")
        yield f"{run.run_id}  {status:13s}  {run.label}"


# ---------------------------------------------------------------------------------------------------------------------
# The demo: the shipped sweeps ``demo`` and ``demo-quick`` (a base-to-novel sweep on the embedded toy world, every
# registered method with the train-time calibrations and post-hoc TS / DAC), then the report. Methods registered later
# join by themselves when they have a toy recipe (the others are skipped with a note).
@dataclass
class DemoResult:
    report: Any  # calprompt.report.build.ReportFiles
    summary: SweepSummary
    notes: list[str]

    @property
    def table(self) -> str:
        """The headline table and the domain-shift tables (Markdown), as the demo prints them: the values alone
        (differences and intervals are in the report's files)."""
        tables = [self.report.tables[0], *(t for t in self.report.tables if t.title.startswith("transfer"))]
        return "\n\n".join(t.without_differences().to_markdown(intervals=False) for t in tables)  # a terminal's width


def plan_demo(out_dir: str | Path, *, quick: bool = False, overrides: Mapping[str, Any] | None = None) -> SweepPlan:
    """The demo sweep against the store ``out_dir``; ``overrides`` set base fields of every run (smoke tests)."""
    spec = load_sweep("demo-quick" if quick else "demo").with_base(overrides or {})
    return plan_sweep(spec, ResultsStore(out_dir))


def demo_report(plan: SweepPlan, summary: SweepSummary) -> DemoResult:
    """Write the report of the demo's runs into ``<store>/report`` (other runs of the store are left out)."""
    from calprompt.report.build import write_report  # lazy: matplotlib only when a report is written

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
