"""A finished run directory is self-contained: copied to another place without its training data, it still predicts
and evaluates on other datasets; a directory written before run records is read, or upgraded where its data is."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from calprompt.cli import app
from calprompt.experiments.config import RunConfig
from calprompt.experiments.predict import predict_images
from calprompt.experiments.rundir import FINISHED_FILE, RECORD_FILE, RESULT_FILES, mark_finished, read_identity
from calprompt.experiments.runner import evaluate_run, run_experiment
from tests.experiments.fault_injection import CLASSES, make_dataset

NEW_CLASSES = ["red circle", "red ring", "blue square"]


def _predictions(run_dir, images, **kwargs):
    result = predict_images(run_dir, [images], **kwargs)
    assert not result.errors
    return result


def _same(before, after):
    assert [p.path for p in after.predictions] == [p.path for p in before.predictions]
    assert after.calibration == before.calibration and after.classnames == before.classnames
    for old, new in zip(before.predictions, after.predictions, strict=True):
        assert new.logits == old.logits and new.confidence == old.confidence and new.top_k == old.top_k


@pytest.fixture()
def trained(tmp_path, cache_env):
    from calprompt.toy.model import build_toy_clip, save_toy_checkpoint

    data = make_dataset(tmp_path / "data")
    torch.manual_seed(0)
    weights = save_toy_checkpoint(build_toy_clip(), tmp_path / "weights.safetensors")  # a file this test may replace
    config = RunConfig(
        dataset="folder", backbone="toy", root=str(data), shots=2, epochs=2, batch_size=4, pretrained=str(weights)
    )
    run_dir = tmp_path / "run"
    run_experiment(config, run_dir)
    images = tmp_path / "images"
    images.mkdir()
    for name in CLASSES[:3]:  # copies of some of its test images
        shutil.copy(data / "test" / name / "0.png", images / f"{name}.png")
    return data, run_dir, images


def test_a_copied_run_predicts_and_evaluates_without_its_training_data(trained, tmp_path):
    data, run_dir, images = trained
    other = make_dataset(tmp_path / "other")  # a folder dataset elsewhere, one test image fewer than the training one
    (other / "test" / CLASSES[0] / "0.png").unlink()
    own, new = _predictions(run_dir, images), _predictions(run_dir, images, classnames=NEW_CLASSES)
    assert own.calibration == "ts" and new.calibration == "ts+dac"
    evaluated = evaluate_run(run_dir, dataset="folder", root=str(other))
    assert next(iter(evaluated.values()))["piece"] is not None  # proximity to the run's stored validation features

    shutil.rmtree(data)  # the training data is gone, and the run lives elsewhere
    copy = shutil.copytree(run_dir, tmp_path / "elsewhere" / "run")
    _same(own, _predictions(copy, images))
    _same(new, _predictions(copy, images, classnames=NEW_CLASSES))
    assert evaluate_run(copy, dataset="folder", root=str(other)) == evaluated
    result = CliRunner().invoke(app, ["eval", "--run", str(copy), "--dataset", "folder", "--root", str(other)])
    assert result.exit_code == 0, result.output
    key = next(iter(evaluated))
    assert json.loads((copy / "evaluations.json").read_text())[key]["report"] == evaluated[key]
    result = CliRunner().invoke(app, ["predict", str(images), "--run", str(copy), "--json"])
    assert result.exit_code == 0, result.output
    assert [p["confidence"] for p in json.loads(result.output)["predictions"]] == [
        p.confidence for p in own.predictions
    ]
    # Re-evaluating on the run's own splits needs its data: refused with the reason.
    with pytest.raises(FileNotFoundError):
        evaluate_run(copy)


def test_a_run_directory_of_the_previous_layout_is_read_and_upgraded(trained, tmp_path):
    data, run_dir, images = trained
    own = _predictions(run_dir, images)
    legacy = shutil.copytree(run_dir, tmp_path / "legacy")  # as calprompt wrote it before run records
    (legacy / RECORD_FILE).unlink()
    mark_finished(legacy, read_identity(legacy), tuple(name for name in RESULT_FILES if name != RECORD_FILE))
    _same(own, _predictions(legacy, images))  # read: the class names come from its data

    moved = tmp_path / "data-moved"
    data.rename(moved)
    with pytest.raises(FileNotFoundError, match="calprompt upgrade"):
        predict_images(legacy, [images])
    moved.rename(data)
    result = CliRunner().invoke(app, ["upgrade", str(legacy)])
    assert result.exit_code == 0 and "run record written" in result.output, result.output
    assert json.loads((legacy / RECORD_FILE).read_text()) == json.loads((run_dir / RECORD_FILE).read_text())
    assert RECORD_FILE in json.loads((legacy / FINISHED_FILE).read_text())["files"]
    shutil.rmtree(data)
    _same(own, _predictions(legacy, images))  # now without the data


def test_predictions_need_the_weights_the_run_recorded(trained, tmp_path):
    """The run record names the weights digest: other weights behind the same path are refused, not used."""
    from calprompt.toy.model import build_toy_clip, save_toy_checkpoint

    _, run_dir, images = trained
    torch.manual_seed(5)
    save_toy_checkpoint(build_toy_clip(), tmp_path / "weights.safetensors")  # the run's weights file replaced
    with pytest.raises(ValueError, match="other backbone weights"):
        predict_images(run_dir, [images])
