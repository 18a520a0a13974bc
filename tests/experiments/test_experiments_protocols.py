"""The protocol contract: a protocol registered here, in the tests, runs through the runner, a sweep, the results
store and the report without any of them knowing its name; the built-in ones meet the same contract."""

from __future__ import annotations

import inspect
import json

import pytest
from typer.testing import CliRunner

import calprompt.experiments.executors
import calprompt.experiments.rundir
import calprompt.experiments.runner
import calprompt.experiments.store
import calprompt.experiments.sweep
import calprompt.report.build
import calprompt.report.headline
import calprompt.report.tables
from calprompt.cli import app
from calprompt.conventions import BASE
from calprompt.experiments.config import RunConfig
from calprompt.experiments.protocols import (
    Evaluation,
    Protocol,
    RunContext,
    Tuned,
    available_protocols,
    get_protocol,
    predict_split,
    register_protocol,
    split_report,
)
from calprompt.experiments.rundir import read_record
from calprompt.experiments.runner import run_experiment
from calprompt.experiments.store import ResultsStore
from calprompt.experiments.sweep import SweepSpec, plan_sweep, run_sweep
from calprompt.methods import build_method
from calprompt.report.build import write_report


@register_protocol
class FirstClasses(Protocol):
    """Test-only: frozen prompts for the first four classes, evaluated on their test images."""

    name = "test-first-classes"

    def _classes(self, splits):
        return list(splits.classnames[:4])

    def check(self, config, splits):
        if len(splits.classnames) < 4:
            raise ValueError("needs four classes")
        return {"novel": "this protocol has no novel classes"}

    def classes(self, splits):
        return {BASE: self._classes(splits)}

    def tune(self, context: RunContext) -> Tuned:
        names, template = self._classes(context.splits), context.splits.template
        method = build_method(context.config.method, context.backbone, names, template=template)
        return Tuned(method, names, template, self.classes(context.splits), {"epochs": 0, "seconds": 0.0})

    def evaluate(self, context: RunContext, method) -> Evaluation:
        items = [item for item in context.splits.test if item.label < 4]
        predictions = predict_split(context, method, items, context.splits.image_loader, ("first", "test"))
        report = split_report(predictions.logits, predictions.labels, context.config)
        return Evaluation({BASE: report}, {"base/logits": predictions.logits, "base/labels": predictions.labels})


CONFIG = {"protocol": FirstClasses.name, "method": "zeroshot", "calibration": "none", "dataset": "toy", "shots": 1}


def test_a_protocol_of_the_tests_runs_through_runner_sweep_store_and_report(tmp_path, toy_weights, cache_env):
    assert FirstClasses.name in available_protocols()
    config = RunConfig(**CONFIG, pretrained=toy_weights)
    result = run_experiment(config, tmp_path / "run")
    assert set(result.metrics) == {BASE, "train", "skipped", "run"}
    assert result.metrics[BASE]["n"] == 4 * 50  # the toy world's 50 test images per class
    assert result.metrics["skipped"] == {"novel": "this protocol has no novel classes"}
    record = read_record(tmp_path / "run")
    assert record.protocol == FirstClasses.name and record.classnames == list(record.classes[BASE])
    assert run_experiment(config, tmp_path / "run").metrics == result.metrics  # finished: returned as stored

    spec = SweepSpec.from_dict({"base": {**CONFIG, "pretrained": toy_weights}, "matrix": {"seed": [1, 2]}})
    store = tmp_path / "store"
    summary = run_sweep(plan_sweep(spec, store))
    assert (summary.done, summary.failed) == (2, 0), summary.errors
    assert len(plan_sweep(spec, store).finished) == 2
    runs = list(ResultsStore(store).iter_runs())
    assert [run.config["protocol"] for run in runs] == [FirstClasses.name] * 2
    files = write_report(runs, tmp_path / "report")
    accuracies = sorted(100 * run.metrics[BASE]["accuracy"] for run in runs)
    mean = sum(accuracies) / 2
    assert f"| zeroshot | {mean:.1f} ±" in files.markdown.read_text()

    result = CliRunner().invoke(app, ["train", "--protocol", FirstClasses.name, "--dry-run"])
    assert result.exit_code == 0 and json.loads(result.output)["protocol"] == FirstClasses.name, result.output


@pytest.mark.parametrize(
    "module",
    [
        calprompt.experiments.runner,
        calprompt.experiments.store,
        calprompt.experiments.sweep,
        calprompt.experiments.executors,
        calprompt.experiments.rundir,
        calprompt.report.tables,
        calprompt.report.build,
        calprompt.report.headline,
    ],
    ids=lambda module: module.__name__,
)
def test_runner_store_sweeps_and_reports_name_no_protocol(module):
    source = inspect.getsource(module)
    for name in available_protocols():
        assert f'"{name}"' not in source and f"'{name}'" not in source, name


def test_unknown_protocols_are_refused_naming_the_known_ones(tmp_path):
    result = CliRunner().invoke(app, ["train", "--protocol", "base-to-novel", "--dry-run"])
    assert result.exit_code == 1 and "base2novel" in result.output and "Traceback" not in result.output
    with pytest.raises(ValueError, match="protocol"):
        get_protocol("nope")
    with pytest.raises(ValueError, match="protocol"):
        run_experiment(RunConfig(protocol="nope"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_registering_a_protocol_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_protocol(FirstClasses)
