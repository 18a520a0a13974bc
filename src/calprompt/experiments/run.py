"""One run of the base-to-novel protocol: data -> few-shot -> base/novel -> train -> evaluate -> post-hoc -> files.

Files written to the run directory (all JSON or safetensors; `calprompt.experiments.rundir` says when a directory
counts as finished and what is never replaced): ``config.json`` (the resolved run config), ``prompt.safetensors`` +
``method.json`` (the learned prompts), ``predictions.safetensors`` (logits, labels and text features of every
evaluated split: what the reports and DAC need), ``metrics.json`` (accuracy, ECE, ... per split, raw and post-hoc
calibrated, and what was skipped), ``checkpoint/`` (resume state).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from calprompt import __version__
from calprompt._io import load_tensors, read_json, save_tensors_atomic, write_json_atomic
from calprompt.calibration import CalibrationObjective, build_objective
from calprompt.calibration.nouns import wordnet_nouns
from calprompt.calibration.outliers import OutlierPool, select_outliers
from calprompt.calibration.posthoc import DistanceAwareCalibration, TemperatureScaling
from calprompt.calibration.registry import OUTLIER_INPUTS
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
from calprompt.experiments.identity import items_fingerprint, run_identity
from calprompt.experiments.locking import run_lock
from calprompt.experiments.minimums import check_minimums, dac_neighbours
from calprompt.experiments.options import typed_run_config
from calprompt.experiments.protocols import check_targets, load_targets, transfer_predictions
from calprompt.experiments.rundir import (
    CONFIG_FILE,
    EVALUATIONS_FILE,
    IDENTITY_FILE,
    METHOD_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PROMPT_FILE,
    RunDirectoryMismatchError,
    claim,
    claim_check,
    evaluation_key,
    is_empty,
    mark_finished,
    read_evaluations,
    read_finished,
    read_identity,
)
from calprompt.methods import PromptMethod, build_method
from calprompt.metrics import evaluate, harmonic_mean

logger = logging.getLogger(__name__)


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


def few_shot_splits(config: RunConfig) -> DatasetSplits:
    """The dataset's few-shot train/val and full test splits, all classes (what the data fingerprint covers)."""
    dataset = load_dataset(config.dataset, config.root, skip_missing=config.skip_missing)
    return sample_few_shot(dataset, config.shots, config.seed)


def base_novel(config: RunConfig, splits: DatasetSplits) -> tuple[DatasetSplits, DatasetSplits | None]:
    """The base and novel halves of ``splits`` (``novel`` is None under the ``all`` protocol)."""
    if config.protocol == "all":
        return splits, None
    return split_base_novel(splits, "base"), split_base_novel(splits, "new")


def prepare_splits(config: RunConfig) -> tuple[DatasetSplits, DatasetSplits | None]:
    """Few-shot sample, then the base and novel halves (``novel`` is None under the ``all`` protocol)."""
    return base_novel(config, few_shot_splits(config))


def run_experiment(
    config: RunConfig,
    out_dir: str | Path,
    *,
    backbone: ClipBackbone | None = None,
    cache_dir: str | Path | None = None,
    progress: Callable | None = None,
    force: bool = False,
    wait: float = 0.0,
) -> RunResult:
    """Train ``config.method`` with ``config.calibration`` on the base classes and evaluate base and novel classes.

    ``out_dir`` belongs to one run identity (config, data fingerprint, weights; see
    `calprompt.experiments.rundir`): a directory of another identity is refused before anything is written, a
    finished run is returned as stored (``force=True`` starts it over), an interrupted one resumes from its last
    checkpoint. One process writes at a time (another waits ``wait`` seconds, then is refused). Pass a loaded
    ``backbone`` to share it across runs.
    """
    config = typed_run_config(config.resolved())
    check_targets(config)
    out = Path(out_dir).expanduser().absolute()
    started = time.perf_counter()
    splits = few_shot_splits(config)
    targets = load_targets(config)
    identity = run_identity(config, splits, targets)
    skipped = check_minimums(config, splits, *base_novel(config, splits))
    if not force and not is_empty(out):
        claim_check(out, identity)  # refuse another identity before taking the lock (nothing written)
    with run_lock(out, wait=wait):
        if claim(out, identity, force=force):
            logger.info("%s is finished with this identity: returning its stored results.", out)
            return RunResult(out, read_finished(out, identity) or {})
        write_json_atomic(out / CONFIG_FILE, {**config.to_dict(), "run_id": identity.run_id})
        metrics = _train_and_evaluate(config, splits, targets, skipped, out, backbone, cache_dir, progress, started)
        mark_finished(out, identity)
    return RunResult(out, metrics)


def _needs_outliers(objective: CalibrationObjective) -> bool:
    return bool(objective.needs & set(OUTLIER_INPUTS))


def outlier_pool(
    backbone: ClipBackbone, classnames: Sequence[str], template: str, base_features: Tensor
) -> OutlierPool:
    """DOR's outliers for a dataset: the shipped WordNet nouns that are none of its classes and that the backbone's
    vocabulary can spell (the toy CLIP knows only its world's words), the 5000 closest to the base classes."""
    covers = getattr(backbone.tokenizer, "covers", None)
    nouns = [noun for noun in wordnet_nouns() if covers is None or covers(noun)]

    encoded: dict[str, Tensor] = {}  # the candidates' features, kept for the chosen names (one text pass)

    def encode(names: Sequence[str]) -> Tensor:
        features = zero_shot_text_features(backbone, names, template)
        encoded.update(zip(names, features, strict=True))
        return features

    names = select_outliers(encode, nouns, classnames, base_features)
    return OutlierPool(tuple(names), torch.stack([encoded[name] for name in names]))


def _train_and_evaluate(
    config: RunConfig,
    splits: DatasetSplits,
    targets: dict[str, DatasetSplits],
    skipped: dict[str, str],
    out: Path,
    backbone: ClipBackbone | None,
    cache_dir: str | Path | None,
    progress: Callable | None,
    started: float,
) -> dict[str, Any]:
    """The run itself, in a claimed and locked directory; writes every result file but the finished marker."""
    seed_everything(config.seed)
    base, novel = base_novel(config, splits)
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
        outliers=outlier_pool(backbone, splits.classnames, base.template, zs_base)
        if _needs_outliers(objective)
        else None,
        cache=cache,
        num_workers=config.num_workers,
    )
    shared = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(RunConfig)}
    train_config = TrainConfig(**{**{name: getattr(config, name) for name in shared}, "epochs": max(config.epochs, 1)})
    history = []
    if config.epochs > 0:
        trainer = Trainer(method, objective, data, train_config, checkpoint_dir=out / "checkpoint", progress=progress)
        with backbone.text_memory_budget(config.text_memory_mb):
            history = trainer.fit().history
    train_seconds = time.perf_counter() - started
    save_tensors_atomic(out / PROMPT_FILE, method.trainable_state_dict())
    write_json_atomic(out / METHOD_FILE, method.describe())

    metrics, tensors = evaluate_base_novel(method, base, novel, transform, config, cache=cache, zs_base=zs_base)
    for name, target in targets.items():  # transfer / domain shift targets, read from the run's data root
        shifted = transfer_predictions(method, target, name, transform, config, cache)
        metrics[f"eval:{name}"] = _report(shifted.logits, shifted.labels, config)
    method.set_classnames(base.classnames)
    metrics["train"] = {
        "epochs": config.epochs,
        "seconds": round(train_seconds, 2),
        "final_loss": history[-1].losses if history else None,
        "trainable_parameters": method.num_trainable_parameters(),
    }
    metrics["skipped"] = {**skipped, **metrics.get("skipped", {})}
    metrics["run"] = {
        "run_id": config.run_id(),
        "calprompt": __version__,
        "seconds": round(time.perf_counter() - started, 2),
    }
    save_tensors_atomic(out / PREDICTIONS_FILE, tensors)
    write_json_atomic(out / METRICS_FILE, metrics)
    return metrics


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

    The run's data must still have its fingerprint (else the re-evaluation is refused). The second form measures
    distribution shift and cross-dataset transfer (e.g. prompts tuned on ``toy`` evaluated on ``toy-domain``); its
    report is added to ``evaluations.json`` under ``"eval:<dataset>"`` (``"eval:<dataset>@<root>"`` for a dataset
    with files), next to earlier evaluations on other targets.
    """
    run_dir = Path(run_dir).expanduser().absolute()
    config, method, splits = load_run(run_dir, backbone=backbone, device=device)
    cache = _feature_cache(config, cache_dir)
    transform = ImageTransformConfig.from_preprocess(method.backbone.preprocess)
    if dataset is None:
        base, novel = base_novel(config, splits)
        zs_base = zero_shot_text_features(method.backbone, base.classnames, base.template)
        fresh, _tensors = evaluate_base_novel(method, base, novel, transform, config, cache=cache, zs_base=zs_base)
        return fresh
    target = load_dataset(dataset, root, skip_missing=config.skip_missing)
    target_root = None if root is None else str(Path(root).expanduser().absolute())
    predictions = transfer_predictions(method, target, dataset, transform, config, cache)
    key = evaluation_key(dataset, target_root)
    entry = {
        "dataset": dataset,
        "root": target_root,
        "data": items_fingerprint(target.test),
        "report": _report(predictions.logits, predictions.labels, config),
    }
    with run_lock(run_dir, wait=60.0):
        write_json_atomic(run_dir / EVALUATIONS_FILE, {**read_evaluations(run_dir), key: entry})
    return {key: entry["report"]}


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
        if novel_test.text_features is None or base_test.text_features is None:
            reports["skipped"] = {"dac": f"{method.name}'s text features depend on the image (DAC needs one per class)"}
        else:
            tensors["novel/tuned_text"] = novel_test.text_features
            dac = DistanceAwareCalibration(k=dac_neighbours(config, base)).fit(zs_base, base_test.text_features)
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
) -> tuple[RunConfig, PromptMethod, DatasetSplits]:
    """Rebuild a finished run's method with its learned prompts (base classes), for evaluation or prediction.

    Returns the config, the method and the run's few-shot splits. Refused when the run is unfinished, a result file
    changed since it finished, or its data no longer has the fingerprint it was trained on.
    """
    run_dir = Path(run_dir).expanduser().absolute()
    stored = read_identity(run_dir) if run_dir.is_dir() else None
    if stored is None or read_finished(run_dir) is None:
        raise FileNotFoundError(
            f"{run_dir} is not a finished calprompt run directory (no {IDENTITY_FILE} / finished marker). "
            "Train into it first (`calprompt train --out DIR`)."
        )
    data = read_json(run_dir / CONFIG_FILE, fix=f"Delete {run_dir} and train again.")
    data.pop("run_id", None)
    if device is not None:
        data["device"] = device
    config = RunConfig.from_dict(data)
    splits = few_shot_splits(config)
    current = run_identity(config, splits, load_targets(config))
    if current != stored:
        listing = "\n".join(f"  {line}" for line in current.differences(stored))
        raise RunDirectoryMismatchError(
            f"{run_dir} was trained on other data or weights than are found now:\n{listing}\n"
            "Restore them, or train a new run."
        )
    base, _ = base_novel(config, splits)
    backbone = backbone if backbone is not None else load_clip(config.backbone, config.pretrained, device=config.device)
    seed_everything(config.seed)
    method = build_method(config.method, backbone, base.classnames, template=base.template, **config.method_options)
    method.load_trainable_state_dict(load_tensors(run_dir / PROMPT_FILE, fix=f"Delete {run_dir} and train again."))
    return config, method, splits
