"""The shipped sweeps behind the README's toy tables plan the runs the tables need, without running any: every
method x none / ours x three seeds (class-specific methods under protocol all), and the ablation's four methods x
four objectives x two schedules x three seeds."""

from __future__ import annotations

from collections import Counter

from calprompt.calibration import build_objective
from calprompt.experiments.sweep import load_sweep, plan_sweep
from calprompt.methods import available_methods, get_method

# Written out, not read from the registry: the methods that learn class-specific weights (issue 23).
CLASS_SPECIFIC = {"zslp", "clap", "taskres", "tip_adapter", "tip_adapter_f"}
SEEDS = {1, 2, 3}


def _runs(name: str, tmp_path):
    plan = plan_sweep(load_sweep(name), tmp_path / name)
    return [run.config for run in plan.runs], plan.notes


def test_toy_methods_plans_every_method_with_none_and_ours_over_three_seeds(tmp_path):
    configs, notes = _runs("toy-methods", tmp_path)
    # calprompt's own methods (other tests register probe methods of their own in this process)
    methods = {name for name in available_methods() if get_method(name).__module__.startswith("calprompt.")}
    assert methods > CLASS_SPECIFIC and {"coop", "proda", "clip_adapter", "promptsrc", "zeroshot"} < methods
    pairs = Counter((c.method, c.calibration) for c in configs)
    trained = methods - {"zeroshot", "tip_adapter"}
    expected = {(m, cal): 3 for m in trained for cal in ("none", "ours")}
    expected |= {("zeroshot", "none"): 6, ("tip_adapter", "none"): 3}  # zero-shot per seed and protocol
    assert pairs == expected and len(configs) == 2 * 3 * len(trained) + 9
    for method, calibration in expected:
        assert {c.seed for c in configs if (c.method, c.calibration) == (method, calibration)} == SEEDS
    assert {c.method for c in configs if c.protocol == "all"} == CLASS_SPECIFIC | {"zeroshot"}
    assert Counter(c.protocol for c in configs if c.method == "zeroshot") == {"base2novel": 3, "all": 3}
    assert {c.protocol for c in configs if c.method not in CLASS_SPECIFIC | {"zeroshot"}} == {"base2novel"}
    assert {(c.dataset, c.backbone, c.recipe, c.shots, c.eval_datasets) for c in configs} == {
        ("toy", "toy", "fast", 16, ("toy-domain",))
    }
    assert {c.epochs for c in configs if c.method in ("zeroshot", "tip_adapter")} == {0}
    reasons = {m: next(n for n in notes if f"'{m}' under" in n) for m in CLASS_SPECIFIC}
    assert "cache keys" in reasons["tip_adapter"] and "one weight per class" not in reasons["tip_adapter"]
    assert "one weight per class" in reasons["taskres"]


def test_toy_ablation_plans_four_methods_four_objectives_two_schedules_three_seeds(tmp_path):
    configs, _ = _runs("toy-ablation", tmp_path)
    # The fast toy recipes (recipes.yaml, toy: fast) and twice their epochs.
    schedules = {"ivlp": {5, 10}, "vpt": {5, 10}, "promptsrc": {5, 10}, "kgcoop": {50, 100}}
    cells = Counter((c.method, c.calibration, c.epochs) for c in configs)
    expected = {
        (m, cal, epochs): 3
        for m, both in schedules.items()
        for cal in ("none", "margin", "moments", "ours")
        for epochs in both
    }
    assert cells == expected and len(configs) == 96
    assert {c.seed for c in configs} == SEEDS and not any(c.calibration_options for c in configs)
    assert {(c.protocol, c.shots, c.recipe, c.eval_datasets) for c in configs} == {
        ("base2novel", 16, "fast", ("toy-domain",))
    }
    # The ablation presets keep one term each, at the paper's constants (alpha 0.1, beta 0.01, lambda_mm 5).
    terms = {
        name: {(term.name, weight): dict(term.params) for term, weight in build_objective(name).terms}
        for name in ("margin", "moments", "ours")
    }
    margin = {("margin_mean_variance", 1.0): {"alpha": 0.1, "beta": 0.01}}
    moments = {("text_moment_matching", 5.0): {}}
    assert terms == {"margin": margin, "moments": moments, "ours": margin | moments}
