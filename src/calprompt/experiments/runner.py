"""The one runner: every run, whatever its protocol, goes data -> backbone -> protocol -> transfer targets -> files.

`run_experiment` first makes every check that needs no writing (`plan_run`, shared with ``train --dry-run``): it
resolves the config once, checks the machine, reads the data and fingerprints it, asks the protocol what cannot run
and notes what the data makes the run adapt (``metrics.json["adapted"]``). Then it claims the run directory
(`calprompt.experiments.rundir`: refused if another run's, returned as stored if finished, resumed if interrupted),
lets the protocol tune and evaluate, evaluates the tuned prompts on the transfer targets (``eval_datasets``), and
writes ``prompt.safetensors``, ``method.json``, ``predictions.safetensors``,
``metrics.json`` and ``run.json`` before the finished marker. `load_run` rebuilds a finished run's method from its
directory alone; `evaluate_run` re-evaluates it, or evaluates it on another dataset.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calprompt import __version__
from calprompt._io import load_tensors, read_json, save_tensors_atomic, write_json_atomic
from calprompt.calibration.proximity import Proximities
from calprompt.clip import ClipBackbone, load_clip
from calprompt.conventions import target_key
from calprompt.data import FeatureCache, ImageTransformConfig, load_dataset
from calprompt.data.items import DatasetSplits
from calprompt.engine.evaluate import Predictions
from calprompt.experiments.config import (
    RunConfig,
    check_machine,
    check_schedule,
    default_cache_dir,
    row_settings,
    written_fields,
)
from calprompt.experiments.identity import (
    RunIdentity,
    data_fingerprint,
    few_shot_splits,
    items_fingerprint,
    load_targets,
    run_identity,
    target_fingerprint,
    weights_fingerprint,
)
from calprompt.experiments.protocols import (
    RunContext,
    check_method_fits,
    check_prompts_reusable,
    get_protocol,
    predict_split,
    seed_everything,
    split_report,
)
from calprompt.experiments.rundir import (
    CONFIG_FILE,
    EVALUATIONS_FILE,
    FINISHED_FILE,
    IDENTITY_FILE,
    METHOD_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PROMPT_FILE,
    RECORD_FILE,
    RunDirectoryMismatchError,
    RunRecord,
    claim,
    claim_check,
    evaluation_key,
    is_empty,
    mark_finished,
    read_evaluations,
    read_finished,
    read_identity,
    read_record,
    run_lock,
    write_record,
)
from calprompt.methods import PromptMethod, build_method, get_method

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]


def feature_cache(config: RunConfig, cache_dir: str | Path | None) -> FeatureCache | None:
    """The shared on-disk feature cache (``cache_dir`` or the default), or None when the run opts out."""
    return FeatureCache(Path(cache_dir or default_cache_dir()) / "features") if config.feature_cache else None


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
    """Run ``config`` (its protocol, then its transfer targets) into ``out_dir``.

    ``out_dir`` belongs to one run identity (config, data fingerprint, weights; see
    `calprompt.experiments.rundir`): a directory of another identity is refused before anything is written, a
    finished run is returned as stored (``force=True`` starts it over), an interrupted one resumes from its last
    checkpoint. One process writes at a time (another waits ``wait`` seconds, then is refused). Pass a loaded
    ``backbone`` to share it across runs.
    """
    started = time.perf_counter()
    plan = plan_run(config)
    config, splits, targets, identity, skipped = plan.config, plan.splits, plan.targets, plan.identity, plan.skipped
    protocol = get_protocol(config.protocol)
    out = Path(out_dir).expanduser().absolute()
    if not force and not is_empty(out):
        claim_check(out, identity)  # refuse another identity before taking the lock (nothing written)
    with run_lock(out, wait=wait):
        if claim(out, identity, force=force):
            logger.info("%s is finished with this identity: returning its stored results.", out)
            return RunResult(out, read_finished(out, identity) or {})
        write_json_atomic(out / CONFIG_FILE, {**written_fields(config), "run_id": identity.run_id})
        seed_everything(config.seed)
        if backbone is None:
            backbone = load_clip(config.backbone, config.pretrained, device=config.device)
        transform = ImageTransformConfig.from_preprocess(backbone.preprocess)
        context = RunContext(
            config, splits, backbone, transform, feature_cache(config, cache_dir), out, progress, started
        )

        tuned = protocol.tune(context)
        method = tuned.method
        save_tensors_atomic(out / PROMPT_FILE, method.trainable_state_dict())
        write_json_atomic(out / METHOD_FILE, method.describe())
        evaluation = protocol.evaluate(context, method)
        metrics = evaluation.metrics
        near = Proximities.of(evaluation.tensors.get("base_val/image_features"))
        for name, target in targets.items():  # transfer / domain shift targets, read from the run's data root
            shifted = transfer_predictions(context, method, target, name)
            shifted_near = near.of_features(shifted.image_features)
            metrics[target_key(name)] = split_report(shifted.logits, shifted.labels, config, proximity=shifted_near)
        method.set_classnames(tuned.classnames)
        metrics["train"] = {**tuned.train, "trainable_parameters": method.num_trainable_parameters()}
        metrics["skipped"] = {**skipped, **metrics.get("skipped", {})}
        adapted = {**plan.adapted, **metrics.pop("adapted", {})}
        if adapted:  # absent when the run used every setting as given
            metrics["adapted"] = adapted
        metrics["run"] = {
            "run_id": identity.run_id,
            "calprompt": __version__,
            "seconds": round(time.perf_counter() - started, 2),
        }
        save_tensors_atomic(out / PREDICTIONS_FILE, evaluation.tensors)
        write_json_atomic(out / METRICS_FILE, metrics)
        record = RunRecord(
            run_id=identity.run_id,
            protocol=protocol.name,
            classnames=tuned.classnames,
            template=tuned.template,
            backbone=config.backbone,
            pretrained=config.pretrained,
            weights=identity.weights,
            classes=tuned.classes,
            row=row_settings(config),
        )
        write_record(out, record)
        mark_finished(out, identity)
    return RunResult(out, metrics)


@dataclass
class PlannedRun:
    """A run checked before anything is written: its resolved config, data, transfer targets and identity, what
    its protocol will skip and what the data made it adapt (setting -> what was used and why)."""

    config: RunConfig
    splits: DatasetSplits
    targets: dict[str, DatasetSplits]
    identity: RunIdentity
    skipped: dict[str, str]
    adapted: dict[str, str]


def plan_run(config: RunConfig, *, machine: bool = True) -> PlannedRun:
    """Every check a run makes before it writes anything (`run_experiment` and ``train --dry-run`` share it): the
    config resolved (names, schedule, backbone), the machine (device, precision), the data read and checked by the
    protocol, and what the data makes the run adapt (`data_adaptations`); ``machine=False`` leaves out the machine."""
    config = config.resolved()
    check_schedule(config)
    if machine:
        check_machine(config)
    protocol = get_protocol(config.protocol)
    check_method_fits(config)
    splits = few_shot_splits(config)
    targets = load_targets(config)
    class_specific = get_method(config.method).class_specific  # only then do targets need the tuned class list
    tuned = protocol.rebuild(config, splits)[0] if class_specific and targets else []
    fits = check_method_fits(config, tuned=tuned, targets={name: target.classnames for name, target in targets.items()})
    fingerprints = {name: target_fingerprint(target) for name, target in targets.items()}
    identity = run_identity(config, data_fingerprint(splits), fingerprints)
    skipped = {**protocol.check(config, splits), **fits}
    return PlannedRun(config, splits, targets, identity, skipped, data_adaptations(config, splits, targets))


def data_adaptations(
    config: RunConfig, splits: DatasetSplits, targets: dict[str, DatasetSplits] | None = None
) -> dict[str, str]:
    """What a run uses other than asked because of its data, for ``metrics.json["adapted"]``: fewer training images
    per class than ``shots`` (each class trains on all it has), and listed images dropped by ``skip_missing``."""
    adapted: dict[str, str] = {}
    counts = Counter(item.label for item in splits.train)
    short = sorted(count for count in counts.values() if count < config.shots)
    if short:
        used = f"{short[0]}" if short[0] == short[-1] else f"{short[0]} to {short[-1]}"
        adapted["shots"] = (
            f"{len(short)} of {len(counts)} classes have fewer training images than the {config.shots} asked for, "
            f"so each trained on all it has ({used})"
        )
    for name, data in ((config.dataset, splits), *(targets or {}).items()):
        if data.missing_files:
            per_split = ", ".join(f"{split} {count}" for split, count in data.missing_counts)
            key = "skip_missing" if name == config.dataset else f"skip_missing:{name}"
            adapted[key] = (
                f"dropped {len(data.missing_files)} listed image file(s) of {name} that do not exist ({per_split}); "
                f"first: {data.missing_files[0]}"
            )
    return adapted


def transfer_predictions(context: RunContext, method: PromptMethod, target: DatasetSplits, name: str) -> Predictions:
    """Logits of ``method`` on ``target``'s test split with the target's class names (the method keeps them).

    Cross-dataset transfer (prompts tuned on ImageNet evaluated on Caltech101, ...) and domain shift (ImageNet ->
    ImageNet-V2/-Sketch/-A/-R; toy -> toy-domain) are this same computation.
    """
    method.set_classnames(target.classnames)
    return predict_split(context, method, target.test, target.image_loader, (name, "test"))


# ---------------------------------------------------------------------------------------------------------------------
# Finished runs
@dataclass
class LoadedRun:
    """A finished run rebuilt from its directory: its config, run record and method (prompts loaded, built for the
    class names they were tuned on). ``splits`` are the run's data when they had to be read (re-evaluation, or a
    directory written before run records), else None."""

    config: RunConfig
    record: RunRecord
    method: PromptMethod
    splits: DatasetSplits | None


def load_run(
    run_dir: str | Path,
    *,
    backbone: ClipBackbone | None = None,
    device: str | None = None,
    with_data: bool = False,
    reuse: str | None = None,
) -> LoadedRun:
    """Rebuild a finished run's method with its learned prompts, for evaluation or prediction.

    Needs nothing but the directory and the backbone's weights (which must have the digest the run recorded);
    ``with_data`` also reads the run's data and refuses it when it no longer has the fingerprint the run was trained
    on. Directories written before run records read the data in any case. Refused when the run is unfinished or a
    result file changed since it finished, and, when ``reuse`` says what the prompts are for (images the run did not
    measure), when they are not what the run measured (`check_prompts_reusable`).
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
    config = RunConfig.from_dict(data).resolved()
    if reuse is not None:
        check_prompts_reusable(config, run_dir, reuse)
    check_machine(config, precision=False)  # a GPU run may be evaluated on a CPU (`device`)
    protocol = get_protocol(config.protocol)
    record = read_record(run_dir)
    splits = None
    if with_data or record is None:
        try:
            splits = few_shot_splits(config)
        except FileNotFoundError as error:
            if record is not None:
                raise
            raise FileNotFoundError(
                f"{run_dir} was written by a calprompt without run records (run.json), so it needs the data it was "
                f"trained on, which is not found ({error}). Where the data is, `calprompt upgrade {run_dir}` "
                "writes its record; then the directory works anywhere."
            ) from error
        fingerprints = {name: target_fingerprint(target) for name, target in load_targets(config).items()}
        current = run_identity(config, data_fingerprint(splits), fingerprints)
        if current != stored:
            listing = "\n".join(f"  {line}" for line in current.differences(stored))
            raise RunDirectoryMismatchError(
                f"{run_dir} was trained on other data or weights than are found now:\n{listing}\n"
                "Restore them, or train a new run."
            )
    if record is None:  # written before run records: what the prompts were built for comes from the data
        classnames, template = protocol.rebuild(config, splits)
        record = RunRecord(
            stored.run_id, protocol.name, classnames, template, config.backbone, config.pretrained, stored.weights
        )
    else:
        weights = weights_fingerprint(config.backbone, config.pretrained)
        if weights != record.weights:
            raise RunDirectoryMismatchError(
                f"{run_dir} was trained with other backbone weights than are found now ({record.weights} there, "
                f"{weights} here). Restore the weights the run used, or train a new run."
            )
    if backbone is None:
        backbone = load_clip(config.backbone, config.pretrained, device=config.device)
    seed_everything(config.seed)
    method = build_method(config.method, backbone, record.classnames, template=record.template, **config.method_options)
    method.load_trainable_state_dict(load_tensors(run_dir / PROMPT_FILE, fix=f"Delete {run_dir} and train again."))
    return LoadedRun(config, record, method, splits)


def upgrade_run(run_dir: str | Path) -> bool:
    """Write the run record of a finished run directory written before records existed (reads its data once, where
    the data still has the run's fingerprint); True when it wrote one, False when the run has one already."""
    run_dir = Path(run_dir).expanduser().absolute()
    if read_record(run_dir) is not None and read_finished(run_dir) is not None:
        return False
    loaded = load_run(run_dir, with_data=True)
    identity = read_identity(run_dir)
    with run_lock(run_dir):
        classes = get_protocol(loaded.config.protocol).classes(loaded.splits)  # type: ignore[arg-type]
        write_record(run_dir, dataclasses.replace(loaded.record, classes=classes, row=row_settings(loaded.config)))
        listed = tuple(read_json(run_dir / FINISHED_FILE, fix="").get("files", {}))
        mark_finished(run_dir, identity, (*listed, RECORD_FILE))
    return True


def evaluate_run(
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    root: str | None = None,
    device: str | None = None,
    backbone: ClipBackbone | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Re-evaluate a finished run on its own splits (its data must still have its fingerprint), or evaluate it on
    another dataset's test split, all classes (the run directory and that dataset are all it needs).

    The second form measures distribution shift and cross-dataset transfer (e.g. prompts tuned on ``toy`` evaluated
    on ``toy-domain``); its report is added to ``evaluations.json`` under ``"eval:<dataset>"``
    (``"eval:<dataset>@<root>"`` for a dataset with files), next to earlier evaluations on other targets.
    """
    run_dir = Path(run_dir).expanduser().absolute()
    reuse = None if dataset is None else f"an evaluation on {dataset!r}"
    loaded = load_run(run_dir, backbone=backbone, device=device, with_data=dataset is None, reuse=reuse)
    config, method = loaded.config, loaded.method
    transform = ImageTransformConfig.from_preprocess(method.backbone.preprocess)
    cache = feature_cache(config, cache_dir)
    context = RunContext(config, loaded.splits, method.backbone, transform, cache, run_dir)  # type: ignore[arg-type]
    if dataset is None:
        return get_protocol(config.protocol).evaluate(context, method).metrics
    target_root = None if root is None else str(Path(root).expanduser().absolute())
    target = load_dataset(dataset, root, skip_missing=config.skip_missing)
    predictions = transfer_predictions(context, method, target, dataset)
    key = evaluation_key(dataset, target_root)
    # PIECE needs each image's proximity to the run's validation images (runs before proximity existed have none)
    stored = load_tensors(run_dir / PREDICTIONS_FILE, fix=f"Delete {run_dir} and train again.")
    near = Proximities.of(stored.get("base_val/image_features")).of_features(predictions.image_features)
    entry = {
        "dataset": dataset,
        "root": target_root,
        "data": items_fingerprint(target.test),
        "report": split_report(predictions.logits, predictions.labels, config, proximity=near),
    }
    with run_lock(run_dir, wait=60.0):
        write_json_atomic(run_dir / EVALUATIONS_FILE, {**read_evaluations(run_dir), key: entry})
    return {key: entry["report"]}
