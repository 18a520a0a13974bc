"""Predict with a saved run: image files -> class, calibrated confidence and the top-k classes.

The run's own post-hoc calibrators are applied exactly as its evaluation applied them: temperature scaling with the
temperature fitted on its few-shot base validation split; for class names of your own (classes the prompts never
saw), DAC fitted from the run's base-class zero-shot and tuned text features, on top of TS (the ``novel+ts+dac``
numbers of ``metrics.json``). Images that cannot be read are reported by path; the others are still predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from calprompt._validation import fail
from calprompt.calibration.posthoc import DistanceAwareCalibration, TemperatureScaling
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.data import ImageTransformConfig
from calprompt.data.items import Item, open_rgb_image
from calprompt.engine.evaluate import predict as predict_items
from calprompt.experiments.rundir import PREDICTIONS_FILE, read_finished
from calprompt.experiments.runner import load_run

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImagePrediction:
    path: str
    label: str  # the predicted class name
    confidence: float  # calibrated probability of the predicted class
    top_k: list[tuple[str, float]]  # (class name, calibrated probability), most probable first
    logits: list[float]  # raw logits, one per class (before calibration)


@dataclass
class PredictionResult:
    classnames: list[str]
    calibration: str  # what was applied, e.g. "ts" or "ts+dac"
    predictions: list[ImagePrediction] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, why it could not be read)

    def to_dict(self) -> dict[str, Any]:
        return {
            "classnames": self.classnames,
            "calibration": self.calibration,
            "predictions": [
                {"path": p.path, "label": p.label, "confidence": p.confidence, "top_k": p.top_k}
                for p in self.predictions
            ],
            "errors": [{"path": path, "error": error} for path, error in self.errors],
        }


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (by suffix, recursively, sorted)."""
    images: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            images.append(path)
    return images


def _readable(images: Sequence[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    good, bad = [], []
    for path in images:
        try:
            open_rgb_image(str(path))
        except OSError as error:  # FileNotFoundError included
            bad.append((str(path), str(error)))
        else:
            good.append(path)
    return good, bad


def predict_images(
    run_dir: str | Path,
    images: Sequence[str | Path],
    *,
    classnames: Sequence[str] | None = None,
    top_k: int = 5,
    device: str | None = None,
    batch_size: int | None = None,
) -> PredictionResult:
    """Predict ``images`` (files or folders) with the finished run in ``run_dir``.

    Without ``classnames`` the run's own classes are used (its base classes under base-to-novel) and temperature
    scaling is applied; with ``classnames`` the prompts are rebuilt for them and TS + DAC is applied. The run
    directory and the backbone's weights are all it needs (not the run's training data).
    """
    collected = collect_images(images)
    if not collected:  # an empty folder is a mistake (wrong path), not a prediction of nothing
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        expected = f"image files, or folders holding some ({suffixes}); pass the folder with the images"
        fail("images", expected, [str(path) for path in images])
    run_dir = Path(run_dir).expanduser().absolute()
    loaded = load_run(run_dir, device=device, reuse="predicting images")
    config, method = loaded.config, loaded.method
    metrics = read_finished(run_dir) or {}
    own_classes = classnames is None
    names = list(loaded.record.classnames) if own_classes else [str(name) for name in classnames]
    if not names:
        raise ValueError("Expected at least one class name, got none.")
    method.set_classnames(names)

    good, errors = _readable(collected)
    result = PredictionResult(names, "none", errors=errors)
    if not good:
        return result
    items = [Item(str(path), 0, names[0]) for path in good]  # labels are unknown: predict only needs images
    transform = ImageTransformConfig.from_preprocess(method.backbone.preprocess)
    raw = predict_items(
        method,
        items,
        transform,
        loader=open_rgb_image,
        batch_size=batch_size,
        device=config.device,
        precision=config.precision,
    )
    logits = raw.logits  # calibrated in the dtype the run's evaluation used, then a float64 softmax (as `evaluate`)
    steps = []
    if "temperature" in metrics:
        ts = TemperatureScaling()
        ts.temperature_ = float(metrics["temperature"])
        logits = ts.transform(logits)
        steps.append("ts")
    if not own_classes and raw.text_features is not None:
        from safetensors.torch import load_file

        stored = load_file(str(run_dir / PREDICTIONS_FILE))
        if "base/tuned_text" in stored:
            k = min(config.dac_k, stored["base/zs_text"].shape[0])  # the run's k, as its evaluation lowered it
            dac = DistanceAwareCalibration(k=k).fit(stored["base/zs_text"], stored["base/tuned_text"])
            zs_text = zero_shot_text_features(method.backbone, names, loaded.record.template)
            logits = dac.transform(logits, zs_text.cpu(), raw.text_features)
            steps.append("dac")
    result.calibration = "+".join(steps) or "none"
    probs = torch.softmax(logits.double(), dim=1)
    k = min(top_k, len(names))
    values, indices = probs.topk(k, dim=1)
    for path, row_logits, row_values, row_indices in zip(good, raw.logits, values, indices, strict=True):
        top = [(names[i], float(v)) for v, i in zip(row_values.tolist(), row_indices.tolist(), strict=True)]
        result.predictions.append(ImagePrediction(str(path), top[0][0], top[0][1], top, row_logits.tolist()))
    return result
