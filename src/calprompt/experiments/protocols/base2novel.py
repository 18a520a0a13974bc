"""Base-to-novel (Zhou et al., CoCoOp): tune the prompts on the base half of the classes, evaluate base and novel.

The prompts are tuned with the run's objective on the few-shot base training split, then evaluated on the base and
novel test classes, raw and post-hoc calibrated: temperature scaling fitted on the few-shot base validation split and
applied to both halves; DAC fitted from the base classes' zero-shot and tuned text features and applied to novel
classes (it is the identity on base); then SaLS, binning, isotonic, multi-isotonic, ProCal and conformal sets
(`posthoc_suite`). Every image's kNN proximity to the base validation images (`Proximities`) feeds ProCal and PIECE.

Before any work the splits are checked: a class with test items but no training items is refused by name (it would
be evaluated nowhere), and what cannot run on a small dataset is recorded in ``metrics.json["skipped"]`` with the
reason (a 6-class dataset has 3 base classes: DAC's k, 5 by default, is lowered to 3).
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

from torch import Tensor

from calprompt._validation import fail
from calprompt.calibration.outliers import outlier_pool
from calprompt.calibration.posthoc import DistanceAwareCalibration, TemperatureScaling
from calprompt.calibration.proximity import Proximities
from calprompt.calibration.registry import OUTLIER_INPUTS
from calprompt.calibration.suite import Scored, posthoc_suite
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.conventions import BASE, NOVEL
from calprompt.data import split_base_novel
from calprompt.data.fewshot import few_shot_items
from calprompt.data.items import DatasetSplits, Item
from calprompt.engine.data import TrainingData
from calprompt.engine.evaluate import Predictions
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.experiments.config import RunConfig
from calprompt.experiments.protocols import (
    Evaluation,
    Protocol,
    RunContext,
    Tuned,
    predict_split,
    register_protocol,
    run_objective,
    seed_everything,
    split_report,
)
from calprompt.methods import PromptMethod, build_method
from calprompt.metrics import harmonic_mean


@register_protocol
class BaseToNovel(Protocol):
    """Tune on the base classes (`halves`), evaluate base and novel test classes."""

    name = "base2novel"
    evaluates_unseen_classes = True

    def halves(self, splits: DatasetSplits) -> tuple[DatasetSplits, DatasetSplits | None]:
        """The classes the prompts are tuned on and the unseen ones (None when every class is tuned on)."""
        return split_base_novel(splits, "base"), split_base_novel(splits, "new")

    def check(self, config: RunConfig, splits: DatasetSplits) -> dict[str, str]:
        base, novel = self.halves(splits)
        if not base.train:
            raise ValueError(
                f"Dataset {config.dataset!r} has no training items. A test-only dataset is an evaluation target: "
                f"train on another dataset, then `calprompt eval --run DIR --dataset {config.dataset}`."
            )
        trained = {item.label for item in splits.train}
        untrained = [name for label, name in enumerate(splits.classnames) if label not in trained]
        if untrained:  # `calprompt datasets check` reports the same classes
            raise ValueError(
                f"{len(untrained)} class(es) of {config.dataset!r} have no training items, so no prompt would ever "
                f"see them (and base-to-novel would evaluate them nowhere): {untrained[:10]}. Add training images "
                "for them, or fix their names if they are typos."
            )
        tested = {item.label for item in splits.test}
        unevaluated = [name for label, name in enumerate(splits.classnames) if label in trained - tested]
        if unevaluated:
            raise ValueError(
                f"{len(unevaluated)} class(es) of {config.dataset!r} have training items but no test items, so they "
                f"would be evaluated on nothing (0 test images): {unevaluated[:10]}. Add test images for them, or "
                "remove their training images."
            )
        for half, classes in (("tuned", base), ("novel", novel)):
            if classes is not None and len(classes.classnames) < 2:
                fail(
                    f"{half} classes of {config.dataset!r} under protocol {self.name!r}",
                    "at least 2 (a softmax over one class is always 1: there is nothing to calibrate); use a dataset "
                    f"with more classes{', or --protocol all' if novel is not None else ''}",
                    len(classes.classnames),
                )
        skipped = {}
        if not base.val:
            skipped["ts"] = "no validation items to fit the temperature on (the dataset has no val split)"
        if novel is not None and dac_neighbours(config, base) < config.dac_k:
            skipped["dac_k"] = (
                f"DAC's k lowered from {config.dac_k} to the {len(base.classnames)} base classes (k <= base classes)"
            )
        return skipped

    def classes(self, splits: DatasetSplits) -> dict[str, list[str]]:
        base, novel = self.halves(splits)
        return {BASE: list(base.classnames), **({NOVEL: list(novel.classnames)} if novel is not None else {})}

    def rebuild(self, config: RunConfig, splits: DatasetSplits) -> tuple[list[str], str]:
        base, _ = self.halves(splits)
        return list(base.classnames), base.template

    def tune(self, context: RunContext) -> Tuned:
        config, backbone = context.config, context.backbone
        base, _ = self.halves(context.splits)
        seed_everything(config.seed)  # method initialisation draws from the run seed, whatever loading consumed
        method = build_method(config.method, backbone, base.classnames, template=base.template, **config.method_options)
        objective = run_objective(config)
        zs_base = zero_shot_text_features(backbone, base.classnames, base.template)
        outliers = None
        if objective.needs & set(OUTLIER_INPUTS):
            outliers = outlier_pool(backbone, context.splits.classnames, base.template, zs_base)
        data = TrainingData(
            base.train,
            backbone.encode_image,
            backbone.identity,
            context.transform,
            loader=base.image_loader,
            dataset_name=config.dataset,
            zero_shot_text_features=zs_base,
            outliers=outliers,
            cache=context.cache,
            num_workers=config.num_workers,
        )
        shared = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(RunConfig)}
        train_config = TrainConfig(
            **{**{name: getattr(config, name) for name in shared}, "epochs": max(config.epochs, 1)}
        )
        history = []
        checkpoints = context.out / "checkpoint"
        trainer = Trainer(method, objective, data, train_config, checkpoint_dir=checkpoints, progress=context.progress)
        with backbone.text_memory_budget(config.text_memory_mb):
            if config.epochs > 0:
                history = trainer.fit().history
            else:  # no training, but a training-free method still builds from its training set (Tip-Adapter)
                trainer.begin()
        train = {
            "epochs": config.epochs,
            "seconds": round(time.perf_counter() - context.started, 2),
            "final_loss": history[-1].losses if history else None,
        }
        return Tuned(method, list(base.classnames), base.template, self.classes(context.splits), train)

    def evaluate(self, context: RunContext, method: PromptMethod) -> Evaluation:
        base, novel = self.halves(context.splits)
        zs_base = zero_shot_text_features(context.backbone, base.classnames, base.template)
        return evaluate_base_novel(context, method, base, novel, zs_base)


def evaluate_base_novel(
    context: RunContext, method: PromptMethod, base: DatasetSplits, novel: DatasetSplits | None, zs_base: Tensor
) -> Evaluation:
    """Raw and post-hoc calibrated metrics on base (and novel) test classes, and the tensors behind them (see the
    module docstring for which calibrator is fitted where)."""
    config, backbone = context.config, method.backbone

    def run(splits: DatasetSplits, split: str, model: PromptMethod = method) -> Predictions:
        items = splits.test if split == "test" else calibration_split(splits, config)
        return predict_split(context, model, items, splits.image_loader, (config.dataset, split))

    method.set_classnames(base.classnames)
    base_test = run(base, "test")
    base_val = run(base, "val") if base.val else None
    near = Proximities.of(None if base_val is None else base_val.image_features)
    zero_shot = build_method("zeroshot", backbone, base.classnames, template=base.template)  # SaLS's reference
    base_zs = run(base, "test", zero_shot).logits
    tensors = {"base/logits": base_test.logits, "base/labels": base_test.labels, "base/zs_text": zs_base}
    tensors["base/zs_logits"] = base_zs
    if base_test.text_features is not None:
        tensors["base/tuned_text"] = base_test.text_features
    base_near = near.of_features(base_test.image_features)
    reports = {"base": split_report(base_test.logits, base_test.labels, config, intervals=True, proximity=base_near)}
    reports.update(near.notes())

    ts = None
    if base_val is not None:
        tensors.update({"base_val/logits": base_val.logits, "base_val/labels": base_val.labels})
        ts = TemperatureScaling().fit(base_val.logits, base_val.labels)
        reports["base+ts"] = split_report(ts.transform(base_test.logits), base_test.labels, config, proximity=base_near)
        reports["temperature"] = ts.temperature_
        if ts.degenerate_:  # the rows +ts are the raw ones then: said, not passed off as a calibration
            reports.setdefault("adapted", {})["ts"] = (
                f"degenerate fit ({ts.degenerate_}): the fit ended at T = {ts.fitted_temperature_:.4g}; "
                "used T = 1 (no scaling)"
            )

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
        novel_near = near.of_features(novel_test.image_features)
        novel_scored = Scored(novel_test.logits, novel_test.labels, novel_zs, novel_near)

        def novel_report(logits: Tensor, intervals: bool = False) -> dict[str, Any]:
            return split_report(logits, novel_test.labels, config, intervals=intervals, proximity=novel_near)

        reports["novel"] = novel_report(novel_test.logits, intervals=True)
        if ts is not None:
            reports["novel+ts"] = novel_report(ts.transform(novel_test.logits))
        if novel_test.text_features is None or base_test.text_features is None:
            reports.setdefault("skipped", {})["dac"] = (
                f"{method.name}'s text features depend on the image (DAC needs one per class)"
            )
        else:
            tensors["novel/tuned_text"] = novel_test.text_features
            dac = DistanceAwareCalibration(k=dac_neighbours(config, base)).fit(zs_base, base_test.text_features)
            reports["novel+dac"] = novel_report(dac.transform(novel_test.logits, zs_novel, novel_test.text_features))
            if ts is not None:
                scaled = ts.transform(novel_test.logits)
                reports["novel+ts+dac"] = novel_report(dac.transform(scaled, zs_novel, novel_test.text_features))
        reports["hm"] = harmonic_mean(reports["base"]["accuracy"], reports["novel"]["accuracy"])
    val_scored = None if base_val is None else Scored(base_val.logits, base_val.labels, None, near.fitting)
    base_scored = Scored(base_test.logits, base_test.labels, base_zs, base_near)
    suite = posthoc_suite(
        lambda z, y, p: split_report(z, y, config, proximity=p),
        val=val_scored,
        base=base_scored,
        novel=novel_scored,
        seed=config.seed,
    )
    if "skipped" in suite:
        reports.setdefault("skipped", {}).update(suite.pop("skipped"))
    reports.update(suite)
    named = {"base_val/proximity": near.fitting, "base/proximity": base_near}
    named.update({"novel/proximity": novel_scored.proximity} if novel_scored else {})
    named["base_val/image_features"] = near.reference  # transfer targets' proximity (the runner, `eval --dataset`)
    tensors.update({key: value for key, value in named.items() if value is not None})  # float64: PIECE recomputes
    return Evaluation(reports, tensors)


def calibration_split(splits: DatasetSplits, config: RunConfig) -> tuple[Item, ...]:
    """The few-shot validation items that temperature scaling is fitted on (min(shots, 4) per class).

    Datasets whose validation split is their test split (ImageNet) draw that many per class from it instead of
    fitting on the whole test set, which would leak test labels into the calibrator.
    """
    if not splits.val_is_test:
        return splits.val
    return few_shot_items(splits.val, min(config.shots, 4), random.Random(config.seed))


def dac_neighbours(config: RunConfig, base: DatasetSplits) -> int:
    """DAC's k: the configured one, at most the number of base classes."""
    return min(config.dac_k, len(base.classnames))
