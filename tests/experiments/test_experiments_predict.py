"""`calprompt predict` on rendered toy-world images reproduces the run's evaluation of those images."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from calprompt.calibration.posthoc import DistanceAwareCalibration
from calprompt.cli import app
from calprompt.experiments.config import RunConfig
from calprompt.experiments.identity import few_shot_splits
from calprompt.experiments.predict import predict_images
from calprompt.experiments.protocols import get_protocol
from calprompt.experiments.runner import run_experiment
from calprompt.experiments.store import ResultsStore
from calprompt.toy.downstream import load_toy_image

PICK = [0, 7, 49, 50, 333, 1199]  # test rows: first / last images of some classes


@pytest.fixture(scope="module")
def trained(toy_weights, tmp_path_factory, shared_cache):
    import os

    os.environ["CALPROMPT_CACHE"] = str(shared_cache)
    config = RunConfig(
        dataset="toy",
        method="coop",
        calibration="none",
        shots=2,
        epochs=2,
        batch_size=16,
        pretrained=toy_weights,
        recipe="fast",
    )
    run_dir = ResultsStore(tmp_path_factory.mktemp("store")).run_dir(config)
    run_experiment(config, run_dir)
    base, novel = get_protocol("base2novel").halves(few_shot_splits(config.resolved()))
    return run_dir, base, novel


def _render(items, folder):
    folder.mkdir()
    paths = []
    for i in PICK:
        path = folder / f"img{i:04d}.png"  # PNG is lossless: the file holds exactly the rendered pixels
        load_toy_image(items[i].impath).save(path)
        paths.append(path)
    return paths


def test_predictions_match_the_evaluation_of_the_same_images(trained, tmp_path):
    run_dir, base, novel = trained
    stored = load_file(str(run_dir / "predictions.safetensors"))
    temperature = json.loads((run_dir / "metrics.json").read_text())["temperature"]

    _render(base.test, tmp_path / "base")
    result = predict_images(run_dir, [tmp_path / "base"], top_k=3)
    assert result.calibration == "ts" and result.classnames == list(base.classnames)
    logits = torch.tensor([p.logits for p in result.predictions])
    expected = stored["base/logits"][PICK]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)  # float32 encoder, other batch sizes
    probs = torch.softmax((expected / temperature).double(), dim=1)
    confidence = torch.tensor([p.confidence for p in result.predictions], dtype=torch.float64)
    torch.testing.assert_close(confidence, probs.max(dim=1).values, rtol=1e-5, atol=1e-6)
    assert [p.label for p in result.predictions] == [base.classnames[i] for i in expected.argmax(dim=1)]
    assert all(len(p.top_k) == 3 and p.top_k[0] == (p.label, p.confidence) for p in result.predictions)

    # new class names: the prompts are rebuilt for them, and DAC (fitted from the run's base classes) joins TS
    _render(novel.test, tmp_path / "novel")
    result = predict_images(run_dir, [tmp_path / "novel"], classnames=novel.classnames)
    assert result.calibration == "ts+dac"
    expected = stored["novel/logits"][PICK]
    torch.testing.assert_close(torch.tensor([p.logits for p in result.predictions]), expected, rtol=1e-5, atol=1e-5)
    dac = DistanceAwareCalibration().fit(stored["base/zs_text"], stored["base/tuned_text"])
    calibrated = dac.transform(expected / temperature, stored["novel/zs_text"], stored["novel/tuned_text"])
    probs = torch.softmax(calibrated.double(), dim=1).max(dim=1).values
    confidence = torch.tensor([p.confidence for p in result.predictions], dtype=torch.float64)
    torch.testing.assert_close(confidence, probs, rtol=1e-5, atol=1e-6)


def test_bad_images_are_reported_and_the_rest_predicted(trained, tmp_path):
    run_dir, base, _ = trained
    good = _render(base.test, tmp_path / "images")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    missing = tmp_path / "nowhere.jpg"
    result = CliRunner().invoke(
        app, ["predict", "--run", str(run_dir), "--json", str(tmp_path / "images"), str(missing)]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert [p["path"] for p in data["predictions"]] == [str(path) for path in good]
    assert {e["path"] for e in data["errors"]} == {str(tmp_path / "images" / "broken.png"), str(missing)}
    table = CliRunner().invoke(
        app, ["predict", "--run", str(run_dir), "--classes", "red circle,blue square", str(good[0])]
    )
    assert table.exit_code == 0 and "ts+dac" in table.output and "2 classes" in table.output


def test_predict_on_an_empty_folder_is_a_one_line_error(trained, tmp_path):
    run_dir, _, _ = trained
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = CliRunner().invoke(app, ["predict", "--run", str(run_dir), str(tmp_path / "empty")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Internal error" not in result.output
    assert lines[0].startswith("Error: Expected `images` to be image files") and str(tmp_path / "empty") in lines[0]


def test_predict_new_classes_on_a_run_with_fewer_base_classes_than_dac_k(toy_weights, tmp_path, shared_cache):
    """8 classes: 4 base classes, below DAC's k = 5; predict uses the k the run's evaluation used (4)."""
    from tests.data.replicas import write_image

    names = ["cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"]
    for index, classname in enumerate(names):
        for split in ("train", "test"):
            write_image(tmp_path / "data" / split / classname / "0.png", 30 * index)
    config = RunConfig(
        dataset="folder",
        root=str(tmp_path / "data"),
        backbone="toy",
        method="coop",
        calibration="none",
        shots=1,
        epochs=1,
        warmup_epochs=0,  # one epoch of training, none of warm-up
        batch_size=4,
        lr=0.002,
        pretrained=toy_weights,
    )
    assert config.dac_k == 5
    run_dir = tmp_path / "run"
    metrics = run_experiment(config, run_dir).metrics
    assert metrics["novel+dac"]["n"] == 4 and "ts" in metrics["skipped"]
    image = str(tmp_path / "data" / "test" / "cat" / "0.png")
    result = CliRunner().invoke(app, ["predict", "--run", str(run_dir), "--json", "--classes", "cat,owl,yak", image])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the toy CLIP's vocabulary warnings go to stderr
    assert data["calibration"] == "dac"  # no val/ folder: no temperature was fitted (the run says so in skipped)
    assert data["classnames"] == ["cat", "owl", "yak"]
    assert len(data["predictions"]) == 1 and len(data["predictions"][0]["top_k"]) == 3
