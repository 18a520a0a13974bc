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
    value = str(tmp_path / "other") if spec.name == "root" else other_value(spec)
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
        ("- a list\n", [], "mapping"),
        ("dataset: oxford_pets\n", [], "root"),  # a dataset with files and no root
    ],
)
def test_bad_configs_fail_before_any_work_naming_the_key(tmp_path, content, args, named):
    config = tmp_path / "run.yaml"
    config.write_text(content)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "-c", str(config), *args, "--out", str(out)])
    assert result.exit_code == 1 and named in result.output and "Traceback" not in result.output
    assert not out.exists()
