"""One run of the base-to-novel protocol: data -> few-shot -> base/novel -> train -> evaluate -> post-hoc -> files.

Files written to the run directory (all JSON or safetensors):
``config.json`` (the resolved run config), ``prompt.safetensors`` + ``method.json`` (the learned prompts),
``predictions.safetensors`` (logits, labels and text features of every evaluated split: what the reports and DAC
need), ``metrics.json`` (accuracy, ECE, ... per split, raw and post-hoc calibrated), ``checkpoint/`` (resume state).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from calprompt import __version__
from calprompt._io import save_tensors_atomic, write_json_atomic
from calprompt.calibration import build_objective
from calprompt.calibration.posthoc import DistanceAwareCalibration, TemperatureScaling
from calprompt.calibration.suite import RUN_BOOTSTRAP_RESAMPLES, Scored, posthoc_suite
from calprompt.clip import ClipBackbone, load_clip
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.data import FeatureCache, ImageTransformConfig, load_dataset, sample_few_shot, split_base_novel
from calprompt.data.fewshot import few_shot_items
from calprompt.data.items import DatasetSplits, Item
from calprompt.engine.data import TrainingData
from calprompt.engine.evaluate import Predictions, predict
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.experiments.config import RunConfig, default_cache_dir
from calprompt.methods import PromptMethod, build_method
from calprompt.metrics import evaluate, harmonic_mean

logger = logging.getLogger(__name__)

CONFIG_FILE, METRICS_FILE, PROMPT_FILE, METHOD_FILE = "config.json", "metrics.json", "prompt.safetensors", "method.json"
PREDICTIONS_FILE = "predictions.safetensors"


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (what the published few-shot code does before building data and prompts)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _feature_cache(config: RunConfig, cache_dir: str | Path | None) -> FeatureCache | None:
    """The shared on-disk feature cache (``cache_dir`` or the default), or None when the run opts out."""
    return FeatureCache(Path(cache_dir or default_cache_dir()) / "features") if config.feature_cache else None


def prepare_splits(config: RunConfig) -> tuple[DatasetSplits, DatasetSplits | None]:
    """Few-shot sample, then the base and novel halves (``novel`` is None under the ``all`` protocol)."""
    dataset = load_dataset(config.dataset, config.root, skip_missing=config.skip_missing)
    splits = sample_few_shot(dataset, config.shots, config.seed)
    if config.protocol == "all":
        return splits, None
    return split_base_novel(splits, "base"), split_base_novel(splits, "new")


def run_experiment(
    config: RunConfig,
    out_dir: str | Path,
    *,
    backbone: ClipBackbone | None = None,
    cache_dir: str | Path | None = None,
    progress: Callable | None = None,
) -> RunResult:
    """Train ``config.method`` with ``config.calibration`` on the base classes and evaluate base and novel classes.

    Pass a loaded ``backbone`` to share it across runs. Re-running into the same ``out_dir`` resumes an interrupted
    run from its last checkpoint.
    """
    config = config.resolved()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, {**config.to_dict(), "run_id": config.run_id()})
    started = time.perf_counter()
    seed_everything(config.seed)
    base, novel = prepare_splits(config)
    backbone = backbone if backbone is not None else load_clip(config.backbone, config.pretrained, device=config.device)
    cache = _feature_cache(config, cache_dir)
    transform = ImageTransformConfig.from_preprocess(backbone.preprocess)

    seed_everything(config.seed)  # method initialisation draws from the run seed, whatever loading consumed
    method = build_method(config.method, backbone, base.classnames, template=base.template, **config.method_options)
    objective = build_objective(config.calibration, **config.calibration_options)
    zs_base = zero_shot_text_features(backbone, base.classnames, base.template)
    data = TrainingData(
        base.train,
        backbone.encode_image,
        backbone.identity,
        transform,
        loader=base.image_loader,
        dataset_name=config.dataset,
        zero_shot_text_features=zs_base,
        cache=cache,
        num_workers=config.num_workers,
    )
    train_config = TrainConfig(
        epochs=max(config.epochs, 1),
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        device=config.device,
        precision=config.precision,
        feature_cache=config.feature_cache,
        distinct_views=config.distinct_views,
    )
    history = []
    if config.epochs > 0:
        trainer = Trainer(method, objective, data, train_config, checkpoint_dir=out / "checkpoint", progress=progress)
        history = trainer.fit().history
    train_seconds = time.perf_counter() - started
    save_tensors_atomic(out / PROMPT_FILE, method.trainable_state_dict())
    write_json_atomic(out / METHOD_FILE, method.describe())

    metrics, tensors = evaluate_base_novel(method, base, novel, transform, config, cache=cache, zs_base=zs_base)
    metrics["train"] = {
        "epochs": config.epochs,
        "seconds": round(train_seconds, 2),
        "final_loss": history[-1].losses if history else None,
        "trainable_parameters": method.num_trainable_parameters(),
    }
    metrics["run"] = {
        "run_id": config.run_id(),
        "calprompt": __version__,
        "seconds": round(time.perf_counter() - started, 2),
    }
    save_tensors_atomic(out / PREDICTIONS_FILE, tensors)
    write_json_atomic(out / METRICS_FILE, metrics)
    return RunResult(out, metrics)


def evaluate_run(
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    root: str | None = None,
    device: str | None = None,
    backbone: ClipBackbone | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Re-evaluate a finished run on its base/novel test splits, or on another dataset's test split (all classes).

    The second form measures distribution shift and cross-dataset transfer (e.g. prompts tuned on ``toy`` evaluated
    on ``toy-domain``); its report is stored in ``metrics.json`` under ``"eval:<dataset>"``.
    """
    run_dir = Path(run_dir)
    config, method = load_run(run_dir, backbone=backbone, device=device)
    cache = _feature_cache(config, cache_dir)
    transform = ImageTransformConfig.from_preprocess(method.backbone.preprocess)
    metrics_path = run_dir / METRICS_FILE
    previous = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    if dataset is None:
        base, novel = prepare_splits(config)
        zs_base = zero_shot_text_features(method.backbone, base.classnames, base.template)
        fresh, tensors = evaluate_base_novel(method, base, novel, transform, config, cache=cache, zs_base=zs_base)
        save_tensors_atomic(run_dir / PREDICTIONS_FILE, tensors)
        write_json_atomic(metrics_path, {**previous, **fresh})
        return fresh
    target = load_dataset(dataset, root, skip_missing=config.skip_missing)
    method.set_classnames(target.classnames)
    predictions = predict(
        method,
        target.test,
        transform,
        loader=target.image_loader,
        device=config.device,
        precision=config.precision,
        cache=cache,
        cache_tag=(dataset, "test"),
        num_workers=config.num_workers,
    )
    fresh = {f"eval:{dataset}": _report(predictions.logits, predictions.labels, config)}
    write_json_atomic(metrics_path, {**previous, **fresh})
    return fresh


def evaluate_base_novel(
    method: PromptMethod,
    base: DatasetSplits,
    novel: DatasetSplits | None,
    transform: ImageTransformConfig,
    config: RunConfig,
    *,
    cache: FeatureCache | None,
    zs_base: Tensor,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Raw and post-hoc calibrated metrics on base (and novel) test classes, and the tensors behind them.

    Temperature scaling is fitted on the few-shot base validation split and applied to both; DAC is fitted from the
    base classes' zero-shot and tuned text features and applied to novel classes (it is the identity on base).
    """
    backbone = method.backbone

    def run(splits: DatasetSplits, split: str, model: PromptMethod = method) -> Predictions:
        items = splits.test if split == "test" else calibration_split(splits, config)
        return predict(
            model,
            items,
            transform,
            loader=splits.image_loader,
            device=config.device,
            precision=config.precision,
            cache=cache,
            cache_tag=(config.dataset, split),
            num_workers=config.num_workers,
        )

    method.set_classnames(base.classnames)
    base_test = run(base, "test")
    zero_shot = build_method("zeroshot", backbone, base.classnames, template=base.template)  # SaLS's reference
    base_zs = run(base, "test", zero_shot).logits
    tensors = {"base/logits": base_test.logits, "base/labels": base_test.labels, "base/zs_text": zs_base}
    tensors["base/zs_logits"] = base_zs
    if base_test.text_features is not None:
        tensors["base/tuned_text"] = base_test.text_features
    reports: dict[str, Any] = {"base": _report(base_test.logits, base_test.labels, config, intervals=True)}

    ts, base_val = None, None
    if base.val:
        base_val = run(base, "val")
        tensors.update({"base_val/logits": base_val.logits, "base_val/labels": base_val.labels})
        ts = TemperatureScaling().fit(base_val.logits, base_val.labels)
        reports["base+ts"] = _report(ts.transform(base_test.logits), base_test.labels, config)
        reports["temperature"] = ts.temperature_

    novel_scored = None
    if novel is not None:
        method.set_classnames(novel.classnames)
        novel_test = run(novel, "test")
        method.set_classnames(base.classnames)
        zero_shot.set_classnames(novel.classnames)
        novel_zs = run(novel, "test", zero_shot).logits
        zs_novel = zero_shot_text_features(backbone, novel.classnames, novel.template)
        tensors.update(
            {"novel/logits": novel_test.logits, "novel/labels": novel_test.labels, "novel/zs_text": zs_novel}
        )
        tensors["novel/zs_logits"] = novel_zs
        novel_scored = Scored(novel_test.logits, novel_test.labels, novel_zs)
        reports["novel"] = _report(novel_test.logits, novel_test.labels, config, intervals=True)
        if ts is not None:
            reports["novel+ts"] = _report(ts.transform(novel_test.logits), novel_test.labels, config)
        if novel_test.text_features is not None and base_test.text_features is not None:
            tensors["novel/tuned_text"] = novel_test.text_features
            dac = DistanceAwareCalibration().fit(zs_base, base_test.text_features)
            dac_logits = dac.transform(novel_test.logits, zs_novel, novel_test.text_features)
            reports["novel+dac"] = _report(dac_logits, novel_test.labels, config)
            if ts is not None:
                reports["novel+ts+dac"] = _report(
                    dac.transform(ts.transform(novel_test.logits), zs_novel, novel_test.text_features),
                    novel_test.labels,
                    config,
                )
        reports["hm"] = harmonic_mean(reports["base"]["accuracy"], reports["novel"]["accuracy"])
    val_scored = None if base_val is None else Scored(base_val.logits, base_val.labels)
    base_scored = Scored(base_test.logits, base_test.labels, base_zs)
    reports.update(
        posthoc_suite(
            lambda z, y: _report(z, y, config), val=val_scored, base=base_scored, novel=novel_scored, seed=config.seed
        )
    )
    return reports, tensors


def calibration_split(splits: DatasetSplits, config: RunConfig) -> tuple[Item, ...]:
    """The few-shot validation items that temperature scaling is fitted on (min(shots, 4) per class).

    Datasets whose validation split is their test split (ImageNet) draw that many per class from it instead of
    fitting on the whole test set, which would leak test labels into the calibrator.
    """
    if not splits.val_is_test:
        return splits.val
    return few_shot_items(splits.val, min(config.shots, 4), random.Random(config.seed))


def _report(logits: Tensor, labels: Tensor, config: RunConfig, *, intervals: bool = False) -> dict[str, Any]:
    """One split's metrics; the main splits (``intervals``) also get seeded bootstrap intervals."""
    resamples = RUN_BOOTSTRAP_RESAMPLES if intervals else 0
    return evaluate(logits, labels, n_bins=config.n_bins, bootstrap=resamples, seed=config.seed).to_dict()


def load_run(
    run_dir: str | Path, *, backbone: ClipBackbone | None = None, device: str | None = None
) -> tuple[RunConfig, PromptMethod]:
    """Rebuild a finished run's method with its learned prompts (base classes), for evaluation or prediction."""
    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, PROMPT_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: is {run_dir} a finished calprompt run directory?")
    data = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    data.pop("run_id", None)
    if device is not None:
        data["device"] = device
    config = RunConfig.from_dict(data)
    base, _ = prepare_splits(config)
    backbone = backbone if backbone is not None else load_clip(config.backbone, config.pretrained, device=config.device)
    seed_everything(config.seed)
    method = build_method(config.method, backbone, base.classnames, template=base.template, **config.method_options)
    method.load_trainable_state_dict(load_file(str(run_dir / PROMPT_FILE)))
    return config, method
