"""Test-time prompt tuning (TPT, Shu et al.; C-TPT; O-TPT): tune the prompt on each test image, without labels.

Every test image of the dataset (all classes) gets the same initial prompt (the method's initial context, or a
finished run's prompts with ``init_run``), is tuned on its own views by the batched tuner
(`calprompt.engine.test_time`: many images at once, one context each) and predicted with its tuned prompt.
The loss is TPT's entropy of the confident views' averaged prediction; ``calibration`` names the label-free
regularizers added to it (the preset's terms, its cross-entropy replaced by TPT's entropy): ``none`` = TPT,
``c-tpt``, ``o-tpt`` (``o-tpt-gram``), ``moments`` (the paper's text moment matching). A preset with a term that
needs labels is refused, naming the term.

Results are written per batch of images under ``test_time/`` in the run directory (atomically, keyed by the images'
indices), so a killed run resumes at the first unfinished batch; each image's views are seeded by (seed, image
index), so the results do not depend on the batch size or on where a run resumed. Metrics: ``base`` (after tuning)
and ``init`` (the initial prompt on the same test views, i.e. zero-shot or the init run), both with intervals.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from calprompt._io import load_tensors, read_json, save_tensors_atomic
from calprompt._validation import fail
from calprompt.calibration import build_objective
from calprompt.calibration.objective import CalibrationObjective, Term
from calprompt.calibration.terms import text_moments
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.conventions import BASE
from calprompt.conventions import TEST_TIME_INIT as INIT
from calprompt.data.items import DatasetSplits
from calprompt.data.test_views import image_view_seed, tuning_views
from calprompt.data.views import ImageViews
from calprompt.engine.precision import autocast
from calprompt.engine.test_time import BatchedTestTimeTuner, TestTimeSettings
from calprompt.experiments.config import TEST_TIME_PROTOCOL, RunConfig
from calprompt.experiments.identity import weights_fingerprint
from calprompt.experiments.protocols import (
    Evaluation,
    Protocol,
    RunContext,
    Tuned,
    register_protocol,
    seed_everything,
    split_report,
)
from calprompt.experiments.rundir import CONFIG_FILE, PROMPT_FILE, read_finished, read_record
from calprompt.methods import PromptMethod, build_method

RESULTS_DIR = "test_time"
_BATCH_FILE = re.compile(r"images-(\d+)-(\d+)\.safetensors")


def test_time_settings(config: RunConfig) -> TestTimeSettings:
    """The run's test-time settings (validated: views, fraction, steps, lr, optimizer)."""
    return TestTimeSettings(
        config.tta_views, config.tta_confident, config.tta_steps, config.tta_lr, config.tta_optimizer
    )


def test_time_objective(config: RunConfig) -> CalibrationObjective:
    """TPT's entropy plus the regularizers of the ``calibration`` preset; a term that needs labels is refused."""
    preset = build_objective(config.calibration, **config.calibration_options)
    labelled = [term.name for term, _ in preset.terms if "labels" in term.needs]
    if preset.base_loss.name != "cross_entropy":  # its own labelled loss (ls, focal, zs-norm): no TPT entropy for it
        labelled.insert(0, preset.base_loss.name)
    if labelled:
        fail(
            "calibration",
            f"a label-free preset for --protocol {TEST_TIME_PROTOCOL} (none, c-tpt, o-tpt, o-tpt-gram, moments): "
            f"{config.calibration!r} has the term(s) {labelled}, which need labels a test image does not have",
            config.calibration,
        )
    return CalibrationObjective(Term("tpt_entropy"), preset.terms, config.calibration)


def check_init_run(config: RunConfig) -> Path | None:
    """The finished run whose prompts a test-time run starts from; refused when unfinished, of another method or
    of other backbone weights."""
    if config.init_run is None:
        return None
    folder = Path(config.init_run)
    record = read_record(folder) if folder.is_dir() else None
    if record is None or read_finished(folder) is None or not (folder / PROMPT_FILE).is_file():
        fail("init_run", "the directory of a finished calprompt run (train one first)", str(folder))
    weights = weights_fingerprint(config.backbone, config.pretrained)
    if record.weights != weights:
        fail(
            "init_run",
            f"a run of this run's backbone {weights!r} (its prompts live in that backbone's embedding space); "
            f"pass its --backbone/--pretrained, or an init run trained on {config.backbone}",
            f"{folder} trained on {record.weights!r}",
        )
    method = read_json(folder / CONFIG_FILE, fix=f"Train {folder} again.").get("method")
    if method != config.method:
        fail("init_run", f"a run of method {config.method!r} (the method being tuned); pass --method {method}", method)
    return folder


@register_protocol
class TestTime(Protocol):
    """Tune the prompt on each test image (all classes of the test split), many images at once."""

    name = TEST_TIME_PROTOCOL
    prompts_per_image = True
    __test__ = False  # not a pytest test class

    def check(self, config: RunConfig, splits: DatasetSplits) -> dict[str, str]:
        if not splits.test:
            fail("dataset", f"a dataset with test images for --protocol {self.name}", config.dataset)
        if len(splits.classnames) < 2:
            fail(f"classes of {config.dataset!r}", "at least 2 (one class has nothing to predict)", 1)
        if config.eval_datasets:
            fail(
                "eval_datasets",
                f"none under --protocol {self.name} (each test image is tuned on its own: run one test-time run per "
                "dataset)",
                list(config.eval_datasets),
            )
        test_time_settings(config)
        test_time_objective(config)
        check_init_run(config)
        return {}

    def classes(self, splits: DatasetSplits) -> dict[str, list[str]]:
        return {BASE: list(splits.classnames)}

    def rebuild(self, config: RunConfig, splits: DatasetSplits) -> tuple[list[str], str]:
        return list(splits.classnames), splits.template

    def tune(self, context: RunContext) -> Tuned:
        config, backbone, splits = context.config, context.backbone, context.splits
        seed_everything(config.seed)
        method = build_method(
            config.method, backbone, splits.classnames, template=splits.template, **config.method_options
        )
        init = check_init_run(config)
        if init is not None:
            method.load_trainable_state_dict(load_tensors(init / PROMPT_FILE, fix=f"Train {init} again."))
        objective = test_time_objective(config)
        moments = None
        if "zs_text_moments" in objective.needs:
            moments = text_moments(zero_shot_text_features(backbone, splits.classnames, splits.template))
        settings = test_time_settings(config)
        with backbone.text_memory_budget(config.text_memory_mb):
            tuner = BatchedTestTimeTuner(
                method, objective, settings, zs_text_moments=moments, precision=config.precision
            )
            folder = context.out / RESULTS_DIR
            chosen = tuned_images(splits, config.tta_images_per_class)
            done = finished_images(folder)
            todo = [index for index in chosen if index not in done]
            images = ImageViews(splits.test, context.transform, train=False, loader=splits.image_loader)
            batches = [todo[start : start + config.tta_batch] for start in range(0, len(todo), config.tta_batch)]
            progress = context.progress or (lambda iterator, total, description: iterator)
            for batch in progress(batches, len(batches), f"test-time tuning ({len(todo)} images)"):
                features = encode_views(images, batch, config, context)
                tuned = tuner.tune(features)
                labels = torch.tensor([splits.test[i].label for i in batch])
                save_tensors_atomic(
                    folder / f"images-{batch[0]:07d}-{batch[-1]:07d}.safetensors",
                    {"indices": torch.tensor(batch), "logits": tuned.logits, INIT: tuned.init_logits, "labels": labels},
                )
        train = {"images": len(chosen), "seconds": round(time.perf_counter() - context.started, 2)}
        return Tuned(method, list(splits.classnames), splits.template, self.classes(splits), train)

    def evaluate(self, context: RunContext, method: PromptMethod) -> Evaluation:
        config = context.config
        results = read_results(context.out / RESULTS_DIR, tuned_images(context.splits, config.tta_images_per_class))
        reports = {
            BASE: split_report(results["logits"], results["labels"], config, intervals=True),
            INIT: split_report(results[INIT], results["labels"], config, intervals=True),
        }
        tensors = {"base/logits": results["logits"], "base/labels": results["labels"]}
        tensors["base/init_logits"] = results[INIT]
        return Evaluation(reports, tensors)


def encode_views(images: ImageViews, batch: list[int], config: RunConfig, context: RunContext) -> torch.Tensor:
    """L2-normalised frozen features (B, N, E) of each image's test-time views, each image's views encoded once."""
    backbone = context.backbone
    features = []
    with torch.no_grad(), autocast(config.device, config.precision):
        for index, image in zip(batch, images.images(batch), strict=True):
            views = tuning_views(
                image,
                config.tta_views,
                image_view_seed(config.seed, index),
                context.transform,
                augmix=bool(config.tta_augmix),
                device=backbone.device,
            )
            features.append(F.normalize(backbone.encode_image(views).float(), dim=-1))  # (N, E)
    return torch.stack(features)


def tuned_images(splits: DatasetSplits, per_class: int | None) -> list[int]:
    """Indices of the test images a run tunes, in test-split order: all of them, or the first ``per_class`` of each
    class (the same images for every variant and seed, so the rows of a table are paired)."""
    if per_class is None:
        return list(range(len(splits.test)))
    seen: dict[int, int] = {}
    chosen = []
    for index, item in enumerate(splits.test):
        seen[item.label] = seen.get(item.label, 0) + 1
        if seen[item.label] <= per_class:
            chosen.append(index)
    return chosen


def finished_images(folder: Path) -> set[int]:
    """Indices of the test images whose results a (possibly killed) run already wrote."""
    if not folder.is_dir():
        return set()
    done: set[int] = set()
    for path in folder.iterdir():
        if _BATCH_FILE.fullmatch(path.name):
            done.update(load_tensors(path, fix=f"Delete {path}; the run computes it again.")["indices"].tolist())
    return done


def read_results(folder: Path, indices: list[int]) -> dict[str, torch.Tensor]:
    """The results of the test images ``indices``, in that order (each image once)."""
    parts: dict[int, dict[str, torch.Tensor]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if _BATCH_FILE.fullmatch(path.name):
            tensors = load_tensors(path, fix=f"Delete {path}; the run computes it again.")
            for row, index in enumerate(tensors["indices"].tolist()):
                parts[index] = {key: value[row] for key, value in tensors.items() if key != "indices"}
    missing = sorted(set(indices) - set(parts))
    if missing:
        fail(str(folder), f"results of all {len(indices)} tuned test images", f"none for {json.dumps(missing[:10])}")
    return {key: torch.stack([parts[i][key] for i in indices]) for key in parts[indices[0]]}
