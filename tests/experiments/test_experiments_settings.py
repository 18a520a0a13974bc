"""The run config from a YAML file, flags and --set: every field reachable, precedence, one clear error per bad key."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
from typer.testing import CliRunner

from calprompt.cli import app
from calprompt.cli.config_options import GROUPED
from calprompt.experiments.config import RunConfig

CHOICES = {"protocol": "all", "recipe": "fast", "precision": "bf16", "method": "zeroshot", "calibration": "none"}
CHOICES["optimizer"] = "adam"
# A backbone name is checked up front (without loading): a known open_clip architecture.
CHOICES["backbone"] = "ViT-B-16"
# Names are checked against the registries before any work (a dry run included): known ones.
CHOICES.update({"dataset": "toy-texture", "eval_datasets": ["toy-domain"]})


def other_value(spec: dataclasses.Field) -> object:
    """A valid value of the field that differs from its default (independent of the code under test)."""
    if spec.name in CHOICES:
        return CHOICES[spec.name]
    hint = typing.get_type_hints(RunConfig)[spec.name]
    if typing.get_origin(hint) is tuple:
        return ["other"]  # a list field, as the resolved record (JSON) holds it
    base = next(arg for arg in (*typing.get_args(hint), hint) if arg is not type(None))
    if base is bool:
        return not spec.default
    if base is int:
        return 3 if spec.default != 3 else 4
    if base is float:
        return 0.25
    return "other"


def dry_run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["train", *args, "--dry-run"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


FIELDS = [spec for spec in dataclasses.fields(RunConfig) if spec.name not in GROUPED]


@pytest.mark.parametrize("spec", FIELDS, ids=lambda spec: spec.name)
def test_every_field_is_reachable_from_a_flag_a_file_and_set(tmp_path, spec):
    value = str(tmp_path / "other") if spec.name in ("root", "init_run") else other_value(spec)  # resolved paths
    text = json.dumps(value) if not isinstance(value, str) else value
    flag = (spec.metadata.get("flags") or (f"--{spec.name.replace('_', '-')}",))[0]
    if isinstance(value, bool):
        flag_args = [f"--{'' if value else 'no-'}{spec.name.replace('_', '-')}"]
    else:
        flag_args = [flag, text]
    (tmp_path / "run.yaml").write_text(f"{spec.name}: {text}\n")
    for args in (flag_args, ["-c", str(tmp_path / "run.yaml")], ["--set", f"{spec.name}={text}"]):
        assert dry_run(*args)[spec.name] == value, args


def test_options_and_precedence_file_then_flags_then_set(tmp_path):
    config = tmp_path / "pets.yaml"
    config.write_text("shots: 4\nseed: 2\nmethod_options: {n_ctx: 8, class_specific_context: 'no'}\nlr: 0.1\n")
    record = dry_run("-c", str(config), "--seed", "5", "--set", "lr=0.2", "--set", "method.n_ctx=16")
    assert (record["shots"], record["seed"], record["lr"]) == (4, 5, 0.2)
    assert record["method_options"] == {"n_ctx": 16, "class_specific_context": False}
    assert len(record["run_id"]) == 16 and record["momentum"] == 0.9  # the full record, loop defaults included


def test_a_relative_root_in_a_file_is_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "run.yaml").write_text("root: ../data\n")
    monkeypatch.chdir(tmp_path / "configs")
    assert dry_run("-c", "run.yaml")["root"] == str(tmp_path / "data")


@pytest.mark.parametrize(
    ("content", "args", "named"),
    [
        ("shotz: 4\n", [], "shotz"),  # unknown key in the file
        ("shots: four\n", [], "shots"),  # wrong type
        ("feature_cache: maybe\n", [], "feature_cache"),
        ("method: nope\n", [], "nope"),  # unknown method
        ("calibration: nope\n", [], "nope"),  # unknown calibration
        ("", ["--set", "method.n_ctxx=3"], "n_ctxx"),
        ("", ["--set", "lr=nan"], "lr"),
        ("text_memory_mb: 0\n", [], "text_memory_mb"),
        ("- a list\n", [], "mapping"),
        ("dataset: oxford_pets\nbackbone: ViT-B-16\n", [], "root"),  # a dataset with files and no root
    ],
)
def test_bad_configs_fail_before_any_work_naming_the_key(tmp_path, content, args, named):
    config = tmp_path / "run.yaml"
    config.write_text(content)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "-c", str(config), *args, "--out", str(out)])
    assert result.exit_code == 1 and named in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_bootstrap_unset_is_left_out_of_the_identity_and_set_changes_it():
    """Runs stored before the setting existed keep their ids: unset, it is not in the record the id hashes."""
    from calprompt.experiments.identity import config_record, run_id

    assert "bootstrap" not in config_record(RunConfig())
    assert config_record(RunConfig(bootstrap=200))["bootstrap"] == 200
    assert run_id(RunConfig(bootstrap=200)) != run_id(RunConfig()) != run_id(RunConfig(bootstrap=0))


def test_sgd_keeps_the_run_ids_from_before_adam_and_taskres_trains_with_its_published_adam_recipe():
    """SGD (the only optimizer before Adam) is left out of the record, set or resolved; TaskRes's recipe is its
    public ViT-B/16 config (geekyutao/TaskRes `adam_lr2e-4_B256_ep200_ViT16.yaml`: Adam, lr 2e-4, batch 256, 200
    epochs, Dassl's weight decay 5e-4)."""
    from calprompt.experiments.identity import config_record, run_id

    assert "optimizer" not in config_record(RunConfig())
    assert "optimizer" not in config_record(RunConfig(optimizer="sgd"))
    assert run_id(RunConfig(optimizer="sgd")) == run_id(RunConfig()) != run_id(RunConfig(optimizer="adam"))
    taskres = RunConfig(method="taskres", protocol="all").resolved()
    assert (taskres.optimizer, taskres.lr, taskres.batch_size, taskres.epochs) == ("adam", 2e-4, 256, 200)
    assert taskres.weight_decay == 5e-4 and config_record(taskres)["optimizer"] == "adam"
    with pytest.raises(ValueError, match=r"`optimizer`.*'adamw'"):
        RunConfig(optimizer="adamw")


def test_mechanics_do_not_change_the_run_id():
    """Where and how a run computes (device, workers, the text encoder's memory budget) names the same run."""
    from calprompt.experiments.identity import run_id

    plain = run_id(RunConfig())
    assert run_id(RunConfig(device="cuda:1", num_workers=4, text_memory_mb=64.0)) == plain
    assert run_id(RunConfig(seed=2)) != plain


def test_a_small_text_memory_budget_trains_the_same_prompts_in_chunks(tmp_path, toy_weights, shared_cache, monkeypatch):
    """`text_memory_mb` reaches the training passes: a budget of a few prompts chunks them (counted), the prompts
    trained are those of the default budget (float32 sums in another order: 1e-5 relative), and a shared backbone
    gets its own budget back."""
    from safetensors.torch import load_file

    import calprompt.clip.text_plan as text_plan
    from calprompt.clip import load_clip
    from calprompt.conventions import DEFAULT_TEXT_MEMORY_MB
    from calprompt.experiments.rundir import PROMPT_FILE
    from calprompt.experiments.runner import run_experiment

    backbone = load_clip("toy", toy_weights)
    chunked = []
    original = text_plan._RecomputedRows.apply
    monkeypatch.setattr(text_plan._RecomputedRows, "apply", lambda *args: chunked.append(args[1]) or original(*args))
    config = RunConfig(shots=2, epochs=2, batch_size=8, pretrained=toy_weights)
    prompts = {}
    for name, budget in (("default", config.text_memory_mb), ("small", 0.05)):
        out = tmp_path / name
        run_experiment(
            dataclasses.replace(config, text_memory_mb=budget), out, backbone=backbone, cache_dir=shared_cache
        )
        prompts[name] = load_file(out / PROMPT_FILE)
        assert backbone.text_memory_budget_mb == DEFAULT_TEXT_MEMORY_MB
        if name == "default":
            assert not chunked
    assert chunked and max(chunked) < 12  # a few rows per chunk, of the 24 base-class prompts
    for key, value in prompts["default"].items():
        assert (prompts["small"][key] - value).norm() <= 1e-5 * value.norm()


def test_a_run_row_holds_the_settings_that_tell_it_apart_and_not_what_the_recipe_gave():
    """What a run writes for reports to group it by: no axis (dataset, seed, root) and no mechanics; epochs, batch
    size and lr only where they differ from the recipe (CoOp's toy fast recipe: 50 epochs)."""
    from calprompt.experiments.config import row_settings

    config = RunConfig(method="coop", calibration="none", recipe="fast", shots=4, epochs=50, seed=3)
    row = row_settings(dataclasses.replace(config, method_options={"n_ctx": "8"}))
    assert row["shots"] == 4 and row["method"] == "coop" and row["method_options.n_ctx"] == 8
    assert not {"epochs", "batch_size", "lr", "dataset", "seed", "root", "device", "num_workers"} & set(row)
    assert row_settings(RunConfig(method="coop", recipe="fast", epochs=20))["epochs"] == 20


def test_grid_takes_every_run_field_train_takes():
    """`calprompt grid` is generated from the same RunConfig as `train`: the same options, the axes repeatable."""
    import typer.main

    commands = typer.main.get_command(app).commands
    options = {name: {p.name: p for p in commands[name].params} for name in ("train", "grid")}
    fields = {spec.name for spec in FIELDS}
    assert fields <= set(options["train"]) and fields <= set(options["grid"])
    for name in fields - {"dataset", "seed"}:
        assert options["grid"][name].opts == options["train"][name].opts, name
    assert options["grid"]["dataset"].multiple and options["grid"]["seed"].multiple
    shared = ("config_file", "assignments", "method_option", "calibration_option")
    assert all(name in options["grid"] for name in shared)
    for command in ("train", "grid"):
        help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"}).output
        for spec in FIELDS:
            flag = (spec.metadata.get("flags") or (f"--{spec.name.replace('_', '-')}",))[0]
            assert flag in help_text, (command, flag)


@pytest.mark.parametrize(
    ("config", "stored_id"),
    [
        (RunConfig(), "d9024af91bcdf489"),
        (
            RunConfig(protocol="all", method="kgcoop", calibration="none", shots=4, seed=2, recipe="fast"),
            "a124329575fb3f6a",
        ),
        (RunConfig(eval_datasets=("toy-domain",), bootstrap=200, lr=0.01), "45f8c91f14fae0bb"),
    ],
)
def test_training_runs_keep_the_ids_they_were_stored_under(config, stored_id):
    """The ids calprompt gave these training runs before test-time runs dropped their training settings and gained
    `tta_images_per_class` (computed with the code of that time): stores written then still find their runs."""
    from calprompt.experiments.identity import run_id

    assert run_id(config) == stored_id


def test_a_setting_at_its_value_from_before_it_existed_splits_no_table_row():
    """Runs stored before `optimizer` existed have no such key in their row; new SGD runs must share their row (they
    share their run id too), while an Adam run is a row of its own."""
    from calprompt.experiments.config import row_settings

    before = {"dataset": "toy", "method": "coop", "calibration": "none", "recipe": "fast"}
    sgd, adam = RunConfig(**before, optimizer="sgd"), RunConfig(**before, optimizer="adam")
    assert "optimizer" not in row_settings(sgd) and row_settings(adam)["optimizer"] == "adam"
    assert {k: v for k, v in row_settings(adam).items() if k != "optimizer"} == row_settings(sgd)
    assert "tta_images_per_class" not in row_settings(RunConfig(**before))
