"""Issue 22: test-time runs end to end (`--protocol test-time`) on a six-class image folder and a random-init toy CLIP.

Must show 5: a run killed with SIGKILL at random moments and restarted ends with the uninterrupted results (the
fault-injection driver, kind ``test-time``); a finished run is returned as stored; any test-time setting is part of
the identity (the images tuned at once are not: they change no result). Must show 6: bad input is refused in one line
naming the setting (a label-needing term, CoCoOp, 0 views, a fraction outside (0, 1], an init run of another
backbone).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calprompt._io import load_tensors
from calprompt.experiments.config import TRAINING_FIELDS, RunConfig
from calprompt.experiments.identity import run_id
from calprompt.experiments.predict import predict_images
from calprompt.experiments.rundir import PREDICTIONS_FILE, PROMPT_FILE, RunDirectoryMismatchError, read_record
from calprompt.experiments.runner import evaluate_run, run_experiment
from tests.experiments.fault_injection import make_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def few_bootstrap_resamples():
    """20 bootstrap resamples instead of 1,000: the intervals' code path at a fraction of these tiny runs' time."""
    import calprompt.calibration.suite

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(calprompt.calibration.suite, "RUN_BOOTSTRAP_RESAMPLES", 20)
        yield


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> str:
    return str(make_dataset(tmp_path_factory.mktemp("folder")))


@pytest.fixture(scope="module")
def base_config(folder_data, toy_weights) -> RunConfig:
    return RunConfig(
        dataset="folder",
        root=folder_data,
        backbone="toy",
        pretrained=toy_weights,
        shots=2,
        protocol="test-time",
        calibration="c-tpt",
        tta_views=8,
        tta_confident=0.25,
        tta_batch=4,
        tta_augmix=False,  # AugMix's views are tested in tests/data; here they would only cost time
        feature_cache=False,
    )


@pytest.fixture(scope="module")
def finished(base_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tta") / "run"
    run_experiment(base_config, out)
    return out


def test_a_run_reports_tuned_and_initial_predictions_of_every_test_image(finished) -> None:
    metrics = json.loads((finished / "metrics.json").read_text())
    assert metrics["train"]["images"] == 18
    for key in ("base", "init"):
        assert set(metrics[key]) >= {"accuracy", "ece"}
        assert "intervals" in metrics[key] or any("interval" in k for k in metrics[key])
    tensors = load_tensors(finished / PREDICTIONS_FILE, fix="")
    assert tensors["base/logits"].shape == tensors["base/init_logits"].shape == (18, 6)
    assert tensors["base/labels"].tolist() == sorted(tensors["base/labels"].tolist())  # test-split order
    assert not torch.equal(tensors["base/logits"], tensors["base/init_logits"])


def test_a_finished_run_is_returned_as_stored(base_config, finished, monkeypatch) -> None:
    import calprompt.engine.test_time as tuner

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run tuned again")

    monkeypatch.setattr(tuner.BatchedTestTimeTuner, "tune", refuse)
    stored = (finished / PREDICTIONS_FILE).read_bytes()
    result = run_experiment(base_config, finished)
    assert result.metrics["base"] == json.loads((finished / "metrics.json").read_text())["base"]
    assert (finished / PREDICTIONS_FILE).read_bytes() == stored


@pytest.mark.parametrize(
    "change",
    [
        {"tta_views": 16},
        {"tta_confident": 0.5},
        {"tta_steps": 2},
        {"tta_lr": 1e-3},
        {"tta_optimizer": "sgd"},
        {"tta_augmix": True},
        {"calibration": "o-tpt"},
        {"calibration_options": {"lambda_dispersion": 20.0}},
    ],
)
def test_every_test_time_setting_is_another_run(base_config, finished, change) -> None:
    changed = dataclasses.replace(base_config, **change)
    assert run_id(changed) != run_id(base_config)
    with pytest.raises(RunDirectoryMismatchError):
        run_experiment(changed, finished)


def test_settings_of_other_protocols_leave_test_time_settings_out(base_config) -> None:
    other = dataclasses.replace(base_config, protocol="all")
    assert run_id(other) == run_id(dataclasses.replace(other, tta_views=16, tta_lr=1.0))
    assert run_id(dataclasses.replace(base_config, tta_batch=7)) == run_id(base_config)


def test_the_batch_size_changes_no_result(base_config, finished, tmp_path) -> None:
    run_experiment(dataclasses.replace(base_config, tta_batch=7), tmp_path / "b7")
    mine = load_tensors(tmp_path / "b7" / PREDICTIONS_FILE, fix="")
    theirs = load_tensors(finished / PREDICTIONS_FILE, fix="")
    torch.testing.assert_close(mine["base/logits"], theirs["base/logits"], rtol=0, atol=1e-5)
    assert torch.equal(mine["base/init_logits"], theirs["base/init_logits"]) or torch.allclose(
        mine["base/init_logits"], theirs["base/init_logits"], rtol=0, atol=1e-5
    )


def test_a_trained_run_initialises_the_prompts(base_config, tmp_path) -> None:
    trained = tmp_path / "coop"
    train_config = dataclasses.replace(
        base_config, protocol="all", calibration="ours", epochs=2, batch_size=4, lr=0.01, warmup_epochs=0
    )
    run_experiment(train_config, trained)
    out = tmp_path / "from-coop"
    run_experiment(dataclasses.replace(base_config, init_run=str(trained)), out)
    started_from = load_tensors(out / PROMPT_FILE, fix="")["ctx"]
    assert torch.equal(started_from, load_tensors(trained / PROMPT_FILE, fix="")["ctx"])
    assert run_id(dataclasses.replace(base_config, init_run=str(trained))) != run_id(base_config)
    # Reports name the row by the kind of run it starts from (its path differs per seed, its kind does not)
    assert read_record(out).row["init_run"] == "coop + ours"


@pytest.mark.parametrize(
    "change",
    [{"shots": 1}, {"epochs": 3}, {"lr": 0.5}, {"batch_size": 2}, {"momentum": 0.5}, {"feature_cache": True}],
)
def test_training_settings_are_no_part_of_a_test_time_run(base_config, finished, change) -> None:
    """A test-time run trains nothing: a training setting changes neither its id nor its data fingerprint (the
    finished run is returned as stored), and its config.json does not list them."""
    changed = dataclasses.replace(base_config, **change)
    assert run_id(changed) == run_id(base_config)
    stored = (finished / PREDICTIONS_FILE).read_bytes()
    run_experiment(changed, finished)
    assert (finished / PREDICTIONS_FILE).read_bytes() == stored
    written = json.loads((finished / "config.json").read_text())
    assert not set(TRAINING_FIELDS) & set(written)
    assert {"tta_views", "seed", "method_options", "calibration"} <= set(written)


def test_a_subset_tunes_the_first_images_of_each_class_with_the_full_runs_results(base_config, finished, tmp_path):
    """``tta_images_per_class``: the first K test images of each class in test-split order, each with the results
    it has in the full run (views seeded per image); unset, it is no part of the identity."""
    assert run_id(dataclasses.replace(base_config, tta_images_per_class=None)) == run_id(base_config)
    subset = dataclasses.replace(base_config, tta_images_per_class=2)
    assert run_id(subset) != run_id(base_config)
    run_experiment(subset, tmp_path / "k2")
    full = load_tensors(finished / PREDICTIONS_FILE, fix="")
    labels = full["base/labels"].tolist()
    chosen = [i for i, label in enumerate(labels) if labels[:i].count(label) < 2]
    assert len(chosen) == 12  # 6 classes x 2
    mine = load_tensors(tmp_path / "k2" / PREDICTIONS_FILE, fix="")
    assert mine["base/labels"].tolist() == [labels[i] for i in chosen]
    torch.testing.assert_close(mine["base/logits"], full["base/logits"][chosen], rtol=0, atol=1e-5)
    torch.testing.assert_close(mine["base/init_logits"], full["base/init_logits"][chosen], rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "k2" / "metrics.json").read_text())["train"]["images"] == 12


def test_eval_and_predict_refuse_a_test_time_runs_initial_prompt(finished, folder_data) -> None:
    """Its prompt.safetensors is each image's starting point, not what the run measured: eval on another dataset
    and predict are refused in one line naming the run, its protocol and what to run instead."""
    image = next(path for path in Path(folder_data).rglob("*") if path.suffix in (".png", ".jpg"))
    for call in (lambda: evaluate_run(finished, dataset="toy"), lambda: predict_images(finished, [image])):
        with pytest.raises(ValueError, match=r"`run`.*--protocol test-time run.*--init-run") as error:
            call()
        assert "\n" not in str(error.value) and str(finished) in str(error.value)


def test_the_toy_sweep_pairs_each_seed_with_its_own_init_run(tmp_path, monkeypatch) -> None:
    """`toy-test-time`: 2 datasets x 4 calibrations x 3 seeds, from zero-shot and from the seed's own CoOp + ours run
    (relative to the folder the sweep starts in), on the same 10 images per class; every run is labelled apart."""
    from calprompt.experiments.sweep import load_sweep, plan_sweep

    monkeypatch.chdir(tmp_path)
    runs = plan_sweep(load_sweep("toy-test-time"), tmp_path / "store").runs
    starts = [(r.config.dataset, r.config.calibration, r.config.seed, r.config.init_run) for r in runs]
    expected = {
        (dataset, calibration, seed, init)
        for dataset in ("toy", "toy-domain")
        for calibration in ("c-tpt", "moments", "none", "o-tpt")
        for seed in (1, 2, 3)
        for init in (None, str(tmp_path / "toy-init" / f"seed-{seed}"))
    }
    assert len(starts) == len(expected) == 48 and set(starts) == expected
    assert {(r.config.protocol, r.config.tta_images_per_class, r.config.tta_views) for r in runs} == {
        ("test-time", 10, 64)
    }
    assert len({r.label for r in runs}) == 48


# ---------------------------------------------------------------- bad input (Must show 6)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"calibration": "ours"}, r"`calibration`.*\['margin_mean_variance'\].*need labels"),
        ({"calibration": "ls"}, r"`calibration`.*\['label_smoothing_cross_entropy'\].*need labels"),
        ({"method": "cocoop"}, r"`method`.*CoCoOp's prompts depend on the image"),
        ({"tta_views": 0}, r"`tta_views`.*integer >= 1"),
        ({"tta_confident": 0.0}, r"`tta_confident`.*\(0, 1\]"),
        ({"tta_confident": 1.5}, r"`tta_confident`.*\(0, 1\]"),
        ({"tta_views": 4, "tta_confident": 0.1}, r"confident fraction.*at least one of the 4 views"),
        ({"eval_datasets": ("toy",)}, r"`eval_datasets`.*one test-time run per dataset"),
        ({"tta_images_per_class": 0}, r"`tta_images_per_class`.*positive integer"),
    ],
)
def test_bad_input_is_refused_in_one_line_naming_the_setting(base_config, tmp_path, change, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        run_experiment(dataclasses.replace(base_config, **change), tmp_path / "bad")
    assert "\n" not in str(error.value)


def test_an_init_run_of_another_backbone_is_refused(base_config, tmp_path) -> None:
    from calprompt.toy.model import build_toy_clip, save_toy_checkpoint

    torch.manual_seed(1)
    other = str(save_toy_checkpoint(build_toy_clip(), tmp_path / "other.safetensors"))
    trained = tmp_path / "other-run"
    run_experiment(
        dataclasses.replace(base_config, pretrained=other, protocol="all", epochs=1, batch_size=4, warmup_epochs=0),
        trained,
    )
    with pytest.raises(ValueError, match=r"`init_run`.*this run's backbone") as error:
        run_experiment(dataclasses.replace(base_config, init_run=str(trained)), tmp_path / "bad")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"`init_run`.*finished calprompt run"):
        run_experiment(dataclasses.replace(base_config, init_run=str(tmp_path / "nothing")), tmp_path / "bad2")


# ---------------------------------------------------------------- SIGKILL (Must show 5)
def test_killed_and_restarted_test_time_runs_end_with_the_uninterrupted_results(tmp_path, toy_weights) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join((str(REPO / "src"), str(REPO)))}
    command = [sys.executable, "-m", "tests.experiments.fault_injection", str(tmp_path), toy_weights]
    command += ["--kind", "test-time", "--points", "10", "--seed", "2"]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["problems"] == []
    assert report["points"] == 10
    assert report["killed_mid_run"] >= 5
