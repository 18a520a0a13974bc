"""What a run records is what it did (issue 21): every setting validated before anything is written (the same checks in
``--dry-run``), what the data makes a run adapt recorded in ``metrics.json["adapted"]``, calibrators that run away
replaced by a stated fallback, and checkpoints that are refused when they do not match their checksum.

Each test is one finding of the new-user probe; each failed on the calprompt before the fix.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from calprompt.cli import app
from calprompt.experiments.config import RunConfig
from calprompt.experiments.runner import run_experiment
from tests.experiments.test_experiments_integrity import image_folder, six_classes

FAST = ["--shots", "2", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def backbone(toy_weights):
    from calprompt.clip import load_clip

    return load_clip("toy", toy_weights)


def refused(args: list[str], out: Path, *expected: str) -> str:
    """Run ``calprompt train ARGS --out OUT``: exit 1, one line naming ``expected``, nothing written; and the same
    arguments with ``--dry-run`` refused the same way (no run id)."""
    result = CliRunner().invoke(app, ["train", *args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Internal error" not in result.output and "Traceback" not in result.output
    assert all(text in result.output for text in expected), result.output
    assert not out.exists()
    dry = CliRunner().invoke(app, ["train", *args, "--dry-run"])
    assert dry.exit_code == 1 and "run_id" not in dry.output, dry.output
    return result.output


# ---------------------------------------------------------------------------------------------------------------
# Settings validated before anything is written (train and --dry-run share the checks)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--precision", "fp8"], "`precision`"),
        (["--views", "0"], "`distinct_views`"),
        (["--grad-accumulation", "0"], "`grad_accumulation`"),
        (["--backbone", "nosuch"], "`backbone`"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_an_invalid_setting_fails_before_anything_is_written(tmp_path, toy_weights, cache_env, flags, named):
    refused(["--pretrained", toy_weights, *FAST, *flags], tmp_path / "run", named)


def test_every_epoch_warm_up_is_refused_naming_both_settings_and_the_fix(tmp_path, toy_weights, cache_env):
    args = ["--pretrained", toy_weights, "--shots", "1", "--epochs", "1", "--lr", "0.5", "--quiet"]
    output = refused(args, tmp_path / "run", "`warmup_epochs`", "`epochs` (1)", "lr 0.5", "--warmup-epochs 0")
    assert "--epochs 2 or more" in output


def test_a_finished_run_of_an_all_warm_up_schedule_still_reads_back():
    """The schedule is refused for runs to come (producer and runner), not when an older run's config is read."""
    from calprompt.experiments.settings import run_config

    assert RunConfig(epochs=1).resolved().warmup_epochs == 1
    with pytest.raises(ValueError, match="`warmup_epochs`"):
        run_config(flags={"epochs": 1})
    assert run_config(flags={"epochs": 1, "method": "zeroshot"}).epochs == 1  # trains nothing: no lr to lose


@pytest.mark.parametrize("flags", [["--precision", "fp16"], ["--precision", "bf16"], ["--device", "cuda"]])
def test_half_precision_on_a_cpu_and_a_missing_gpu_are_refused_up_front(tmp_path, toy_weights, cache_env, flags):
    if flags[0] == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    named = "`precision`" if flags[0] == "--precision" else "`device`"
    result = CliRunner().invoke(app, ["train", "--pretrained", toy_weights, *FAST, *flags, "--out", str(tmp_path)])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert named in result.output and "Internal error" not in result.output
    assert not any(tmp_path.iterdir())


def test_a_dataset_other_than_the_toy_world_needs_a_backbone(tmp_path, toy_weights, cache_env):
    root = image_folder(tmp_path / "data", six_classes())
    args = ["-d", "folder", "--root", str(root), "--pretrained", toy_weights, *FAST]
    refused(args, tmp_path / "run", "`backbone`", "--backbone ViT-B-16 --pretrained openai", "--backbone toy")
    assert RunConfig(dataset="toy-texture").resolved().backbone == "toy"  # the toy world keeps its default


def test_a_class_with_training_but_no_test_images_is_refused_by_name(tmp_path, toy_weights, cache_env):
    root = image_folder(tmp_path / "data", six_classes())
    image_folder(root, ("blue_star",), test=0)
    args = ["-d", "folder", "--backbone", "toy", "--root", str(root), "--pretrained", toy_weights, *FAST]
    refused(args, tmp_path / "run", "blue_star", "no test items")


@pytest.mark.parametrize(
    ("classes", "protocol", "tuned"),
    [(2, "base2novel", "tuned classes"), (3, "base2novel", "novel classes"), (1, "all", "tuned classes")],
)
def test_too_few_classes_are_refused_up_front_with_the_reason(
    tmp_path, toy_weights, cache_env, classes, protocol, tuned
):
    root = image_folder(tmp_path / "data", six_classes()[:classes])
    args = ["-d", "folder", "--backbone", "toy", "--root", str(root), "--pretrained", toy_weights, *FAST]
    refused([*args, "--protocol", protocol, "--calibration", "ours"], tmp_path / "run", tuned, "one class is always 1")


def test_two_classes_train_with_ours_under_the_all_class_protocol(tmp_path, backbone, toy_weights, shared_cache):
    root = image_folder(tmp_path / "data", six_classes()[:2])
    config = RunConfig(
        dataset="folder", backbone="toy", root=str(root), protocol="all", shots=2, epochs=1, warmup_epochs=0
    )
    config = dataclasses.replace(config, batch_size=4, pretrained=toy_weights)
    metrics = run_experiment(config, tmp_path / "run", backbone=backbone, cache_dir=shared_cache).metrics
    assert metrics["base"]["n_classes"] == 2 and metrics["base"]["n"] == 6


# ---------------------------------------------------------------------------------------------------------------
# What the data makes a run adapt is recorded in metrics.json["adapted"]


def test_fewer_training_images_than_shots_are_recorded(tmp_path, backbone, toy_weights, shared_cache):
    root = image_folder(tmp_path / "data", six_classes())  # 2 training images per class
    config = RunConfig(dataset="folder", backbone="toy", root=str(root), shots=2, epochs=1, warmup_epochs=0)
    config = dataclasses.replace(config, batch_size=4, pretrained=toy_weights)
    exact = run_experiment(config, tmp_path / "exact", backbone=backbone, cache_dir=shared_cache).metrics
    assert "shots" not in exact.get("adapted", {})  # (random pixels: near chance, so TS may be recorded as adapted)
    asked = dataclasses.replace(config, shots=1000)
    metrics = run_experiment(asked, tmp_path / "asked", backbone=backbone, cache_dir=shared_cache).metrics
    assert metrics["adapted"]["shots"] == (
        "6 of 6 classes have fewer training images than the 1000 asked for, so each trained on all it has (2)"
    )


def test_skip_missing_records_how_many_images_each_split_dropped(tmp_path, backbone, toy_weights, shared_cache):
    images = image_folder(tmp_path / "images", six_classes())
    gone = {"train": images / "train" / "red_star" / "gone.png", "test": images / "test" / "red_ring" / "gone.png"}
    for split in ("train", "val", "test"):
        rows = [f"{path},{path.parent.name}" for path in sorted((images / split).rglob("*.png"))]
        if split in gone:
            rows.append(f"{gone[split]},{gone[split].parent.name}")
        (tmp_path / f"{split}.csv").write_text("path,classname\n" + "\n".join(rows) + "\n")
    config = RunConfig(dataset="csv", backbone="toy", root=str(tmp_path), shots=2, epochs=1, warmup_epochs=0)
    config = dataclasses.replace(config, batch_size=4, pretrained=toy_weights, skip_missing=True)
    metrics = run_experiment(config, tmp_path / "run", backbone=backbone, cache_dir=shared_cache).metrics
    assert metrics["adapted"]["skip_missing"] == (
        f"dropped 2 listed image file(s) of csv that do not exist (train 1, val 0, test 1); first: {gone['train']}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Calibrators that run away


def test_temperature_scaling_on_all_wrong_logits_falls_back_to_no_scaling():
    from calprompt.calibration.posthoc import TemperatureScaling

    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]] * 10)
    labels = torch.tensor([1, 2, 0] * 10)  # every prediction wrong
    scaler = TemperatureScaling().fit(logits, labels)
    assert scaler.fitted_temperature_ > 100  # where the optimiser ran off to
    assert scaler.temperature_ == 1.0 and "no finite optimum" in scaler.degenerate_
    assert torch.equal(scaler.transform(logits), logits)
    unbounded = TemperatureScaling(bounds=None).fit(logits, labels)
    assert unbounded.temperature_ == unbounded.fitted_temperature_ and unbounded.degenerate_ is None


def test_a_run_records_a_degenerate_temperature_and_the_fallback_it_used(
    tmp_path, backbone, toy_weights, shared_cache, monkeypatch
):
    import calprompt.calibration.posthoc as posthoc

    config = RunConfig(shots=1, epochs=1, warmup_epochs=0, batch_size=8, pretrained=toy_weights)
    fine = run_experiment(config, tmp_path / "fine", backbone=backbone, cache_dir=shared_cache).metrics
    assert "adapted" not in fine and fine["temperature"] != 1.0
    check_proximity_outputs(fine, tmp_path / "fine")  # the same run, to keep the suite short
    monkeypatch.setattr(posthoc, "fit_temperature", lambda *args: 3.0e10)  # the optimiser ran away
    metrics = run_experiment(config, tmp_path / "away", backbone=backbone, cache_dir=shared_cache).metrics
    assert metrics["temperature"] == 1.0
    assert metrics["adapted"] == {
        "ts": "degenerate fit (the fitted T 3e+10 is outside [0.01, 100] (no finite optimum in reach)): the fit "
        "ended at T = 3e+10; used T = 1 (no scaling)"
    }
    for key in ("accuracy", "ece", "nll"):
        assert metrics["base+ts"][key] == metrics["base"][key]  # no scaling, said so: not a uniform-probability row


def check_proximity_outputs(metrics: dict, out: Path) -> None:
    """A run's metrics.json carries the multi-isotonic and ProCal variants and PIECE, all from the one proximity per
    image it stores (a leave-one-out proximity for the validation images)."""
    from calprompt.calibration.procal import DensityRatioCalibration
    from calprompt.metrics import evaluate

    stored = load_file(str(out / "predictions.safetensors"))
    assert metrics["proximity_k"] == 5
    for split in ("base", "novel"):
        near = stored[f"{split}/proximity"].double()
        expected = evaluate(stored[f"{split}/logits"], stored[f"{split}/labels"], proximity=near)
        assert metrics[split]["piece"] == pytest.approx(expected.piece, abs=1e-12)
        assert metrics[f"{split}+multi_isotonic"]["piece"] is not None and f"{split}+procal_isotonic" in metrics
    for key in ("multi_isotonic", "procal_isotonic", "procal_density"):
        assert key in metrics["posthoc"] or key in metrics.get("skipped", {})
    if "procal_density" in metrics["posthoc"]:
        val_near = stored["base_val/proximity"].double()
        density = DensityRatioCalibration().fit(stored["base_val/logits"], stored["base_val/labels"], val_near)
        novel_near = stored["novel/proximity"].double()
        expected = evaluate(density.transform(stored["novel/logits"], novel_near), stored["novel/labels"])
        assert metrics["novel+procal_density"]["ece"] == pytest.approx(expected.ece, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints are checked, not trusted


def killed_after_training(tmp_path: Path, backbone, toy_weights: str, shared_cache) -> tuple[RunConfig, Path]:
    config = RunConfig(shots=1, epochs=2, batch_size=8, pretrained=toy_weights)
    out = tmp_path / "run"
    run_experiment(config, out, backbone=backbone, cache_dir=shared_cache)
    (out / "finished.json").unlink()  # as if killed after the last checkpoint
    return config, out


def edit_tensors(out: Path, change) -> Path:
    meta = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    path = out / "checkpoint" / meta["tensors"]
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda out: edit_tensors(out, lambda t: t["param/ctx"].add_(1e-3)), "does not match its checksum"),
        (lambda out: edit_tensors(out, lambda t: t["param/ctx"].view(-1)[0].fill_(float("nan"))), "NaN"),
    ],
    ids=["edited-tensor", "nan-tensor"],
)
def test_an_edited_or_nan_checkpoint_is_refused_as_corrupt(
    tmp_path, backbone, toy_weights, shared_cache, edit, message
):
    from calprompt._io import CorruptFileError

    config, out = killed_after_training(tmp_path, backbone, toy_weights, shared_cache)
    edit(out)
    with pytest.raises(CorruptFileError, match=message) as info:
        run_experiment(config, out, backbone=backbone, cache_dir=shared_cache)
    assert str(out / "checkpoint") in str(info.value) and "--force" in str(info.value)
    assert "learning rate" not in str(info.value)
    forced = run_experiment(config, out, backbone=backbone, cache_dir=shared_cache, force=True).metrics
    assert "base" in forced  # the fix the message gives works


@pytest.mark.parametrize("resealed", [False, True], ids=["edited-epoch", "resealed-epoch"])
def test_an_epoch_beyond_the_schedule_is_refused(tmp_path, backbone, toy_weights, shared_cache, resealed):
    from calprompt._io import CorruptFileError
    from calprompt.engine.checkpoint import checkpoint_digest

    config, out = killed_after_training(tmp_path, backbone, toy_weights, shared_cache)
    state = out / "checkpoint" / "checkpoint.json"
    meta = json.loads(state.read_text())
    meta["epoch"] = 0 if not resealed else 7  # warm-up prompts passed off as a finished run / beyond 2 epochs
    if resealed:  # a checksum that matches the edit: the schedule check still refuses it
        meta["sha256"] = checkpoint_digest(load_file(str(out / "checkpoint" / meta["tensors"])), meta)
    state.write_text(json.dumps(meta))
    expected = "beyond this run's 2 epochs" if resealed else "does not match its checksum"
    with pytest.raises(CorruptFileError, match=expected) as info:
        run_experiment(config, out, backbone=backbone, cache_dir=shared_cache)
    assert str(out / "checkpoint") in str(info.value) and "--force" in str(info.value)
