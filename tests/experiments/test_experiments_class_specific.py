"""Class-specific methods (one weight per class: ZS-LP, CLAP, TaskRes) in runs, sweeps and reports: refused where
they would have to name unseen classes, planned under protocol all by ``method: "*"``, their novel columns n/a with
the reason; and `calprompt train` end to end for every adapter with ``none`` and ``ours``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from calprompt.cli import app
from calprompt.conventions import NOVEL
from calprompt.experiments.config import RunConfig
from calprompt.experiments.protocols import check_method_fits
from calprompt.experiments.settings import run_config
from calprompt.experiments.store import ResultsStore
from calprompt.experiments.sweep import SweepSpec, load_sweep, plan_sweep, run_sweep
from calprompt.methods import available_methods, get_method
from calprompt.report.build import write_report
from calprompt.report.cells import DELTA

CLASS_SPECIFIC = ("zslp", "clap", "taskres")  # this branch's; the Tip-Adapters are class-specific too
#: Every registered class-specific method (what a ``method: "*"`` sweep must move to protocol all).
EVERY_CLASS_SPECIFIC = ("clap", "taskres", "tip_adapter", "tip_adapter_f", "zslp")


def test_the_class_specific_methods_declare_it():
    assert {m for m in available_methods() if get_method(m).class_specific} == set(EVERY_CLASS_SPECIFIC)
    assert not get_method("clip_adapter").class_specific and not get_method("coop").class_specific


@pytest.mark.parametrize("method", CLASS_SPECIFIC)
def test_base_to_novel_and_outlier_objectives_are_refused_at_config_time(method):
    with pytest.raises(ValueError, match=r"`protocol`.*one weight per class.*protocol: all.*got 'base2novel'"):
        run_config(flags={"method": method})  # the default protocol is base-to-novel
    with pytest.raises(ValueError, match=r"`calibration`.*outlier.*got 'dor'"):
        run_config(flags={"method": method, "protocol": "all", "calibration": "dor"})
    config = run_config(flags={"method": method, "protocol": "all", "calibration": "ours"})
    assert "one weight per class" in check_method_fits(config)[NOVEL]
    assert check_method_fits(run_config(flags={"method": "coop"})) == {}


@pytest.mark.parametrize("method", ["tip_adapter", "tip_adapter_f"])
def test_the_tip_adapters_give_their_own_reason(method):
    """They learn no weight per class: their cache's keys and one-hot values come from the tuned classes' shots."""
    with pytest.raises(ValueError, match=r"`protocol`.*cache keys and one-hot values.*protocol: all"):
        run_config(flags={"method": method})
    reason = check_method_fits(run_config(flags={"method": method, "protocol": "all"}))[NOVEL]
    assert "cache keys and one-hot values from the tuned classes' training shots" in reason
    assert "one weight per class" not in reason


def test_transfer_targets_need_the_tuned_class_list():
    config = RunConfig(method="zslp", protocol="all").resolved()
    tuned = ["red circle", "blue circle"]
    check_method_fits(config, tuned=tuned, targets={"toy-domain": list(tuned)})
    for other in (tuned[::-1], tuned[:1], [*tuned, "green star"]):
        with pytest.raises(ValueError, match=r"eval_datasets entry 'toy-domain'.*drop it from eval_datasets"):
            check_method_fits(config, tuned=tuned, targets={"toy-domain": other})
    check_method_fits(RunConfig(method="coop").resolved(), tuned=tuned, targets={"x": tuned[:1]})  # names anything


def test_every_method_sweep_plans_class_specific_methods_under_protocol_all(tmp_path):
    base = {"dataset": "toy", "epochs": 2, "batch_size": 8, "lr": 0.01}
    for protocol in ({}, {"protocol": "base2novel"}):
        spec = SweepSpec.from_dict({"base": {**base, **protocol}, "matrix": {"method": "*", "calibration": "none"}})
        plan = plan_sweep(spec, tmp_path)
        protocols = {run.config.method: run.config.protocol for run in plan.runs}
        assert set(CLASS_SPECIFIC) <= set(protocols)
        for method, planned in protocols.items():
            assert planned == ("all" if get_method(method).class_specific else "base2novel"), method
        assert sum("class-specific method" in note for note in plan.notes) == len(EVERY_CLASS_SPECIFIC)
    spec = SweepSpec.from_dict({"base": {**base, "protocol": "all"}, "matrix": {"method": "*"}})
    assert not any("class-specific" in note for note in plan_sweep(spec, tmp_path).notes)


def test_every_method_sweep_drops_targets_of_another_class_count(tmp_path):
    """The shipped transfer sweep (ImageNet -> 10 datasets and 4 variants): a class-specific method keeps the
    targets with ImageNet's 1000 classes (V2, Sketch); the others are dropped with a note, not failed runs."""
    plan = plan_sweep(load_sweep("paper-transfer").with_base({"root": str(tmp_path)}), tmp_path / "store")
    targets = {run.config.method: run.config.eval_datasets for run in plan.runs}
    for method in CLASS_SPECIFIC:
        assert targets[method] == ("imagenet_v2", "imagenet_sketch"), method
    assert len(targets["coop"]) == 14 and len(targets["clip_adapter"]) == 14
    assert sum("dropped transfer targets" in note for note in plan.notes) == len(EVERY_CLASS_SPECIFIC)


def test_a_base_to_novel_sweep_runs_and_reports_a_class_specific_method(toy_weights, tmp_path, cache_env):
    """``method: "*"`` (all but CoOp and ZS-LP excluded) on base-to-novel: ZS-LP runs under protocol all, and the
    report shows its novel columns as n/a with the reason, CoOp's as numbers."""
    others = [{"method": m} for m in available_methods() if m not in ("coop", "zslp")]
    base = {"pretrained": toy_weights, "shots": 1, "epochs": 2, "batch_size": 16, "lr": 0.01, "protocol": "base2novel"}
    spec = SweepSpec.from_dict({"base": base, "matrix": {"method": "*", "calibration": "none"}, "exclude": others})
    plan = plan_sweep(spec, tmp_path / "store")
    assert sorted((r.config.method, r.config.protocol) for r in plan.runs) == [("coop", "base2novel"), ("zslp", "all")]
    summary = run_sweep(plan)
    assert summary.done == 2 and summary.failed == 0, summary.errors
    runs = {run.config["method"]: run for run in ResultsStore(tmp_path / "store").iter_runs()}
    assert NOVEL not in runs["zslp"].metrics and "one weight per class" in runs["zslp"].metrics["skipped"][NOVEL]
    assert NOVEL in runs["coop"].metrics and NOVEL not in runs["coop"].metrics["skipped"]
    report = write_report(list(runs.values()), tmp_path / "report")
    summary_table = report.tables[0]
    values = [j for j, title in enumerate(summary_table.columns) if not title.startswith(DELTA)]
    cells = {label: [row[j].text for j in values] for label, row in summary_table.rows}
    assert cells["zslp"][2:] == ["n/a", "n/a", "n/a"] and all(cells["zslp"][:2])  # novel acc, ECE, HM; base shown
    assert "n/a" not in cells["coop"]
    assert any(note.startswith("zslp: zslp learns one weight per class") for note in summary_table.notes)
    markdown = report.markdown.read_text()
    assert "n/a: zslp: zslp learns one weight per class" in markdown
    assert "n/a: zslp: zslp learns one weight per class" in report.html.read_text()


@pytest.mark.parametrize("method", ["zslp", "clap", "taskres", "clip_adapter"])
def test_train_end_to_end_with_none_and_ours(toy_weights, tmp_path, cache_env, method):
    protocol = "base2novel" if method == "clip_adapter" else "all"
    for calibration in ("none", "ours"):
        out = tmp_path / calibration
        args = ["train", "--dataset", "toy", "--method", method, "--protocol", protocol, "--calibration", calibration]
        args += ["--pretrained", toy_weights, "--shots", "1", "--epochs", "2", "--batch-size", "16", "-q"]
        result = CliRunner().invoke(app, [*args, "--eval-datasets", "toy-domain", "--out", str(out)])
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["base"]["n_classes"] == (24 if protocol == "base2novel" else 48)
        assert (NOVEL in metrics) == (protocol == "base2novel")
        assert metrics["eval:toy-domain"]["n_classes"] == 48  # the same class list: a valid target
        losses = metrics["train"]["final_loss"]
        assert ("margin_mean_variance" in losses) == (calibration == "ours"), losses
        assert ("clap_constraint" in losses) == (method == "clap")
