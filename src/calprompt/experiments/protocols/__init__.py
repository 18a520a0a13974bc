"""Protocols: what a run does between "data and backbone loaded" and "files written".

A protocol decides which classes the prompts are tuned on and which splits are evaluated how: ``base2novel`` tunes on
the base half of the classes and evaluates base and novel test classes; ``all`` tunes and evaluates on every class
(the few-shot protocol). Each is one module behind `Protocol` and one `register_protocol` call, like methods: the
runner (`calprompt.experiments.runner`), the results store, sweeps and reports use a protocol through this interface
and the files a run writes, never by its name. Transfer targets (``eval_datasets``) are evaluated by the runner for
every protocol.

A method that learns one weight per class (`PromptMethod.class_specific`) cannot name a class it was not tuned on:
`check_method_fits` refuses, before any work, a protocol that evaluates classes unseen while tuning
(`Protocol.evaluates_unseen_classes`), an objective that needs prompts for outlier class names, and transfer
targets with another class list.

A protocol's ``run`` returns the tuned method and what it measured; the runner saves the prompts, evaluates the
targets and writes every file.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from calprompt._validation import fail, fail_unknown
from calprompt.conventions import NOVEL

if TYPE_CHECKING:
    from torch import Tensor

    from calprompt.calibration import CalibrationObjective
    from calprompt.clip import ClipBackbone
    from calprompt.data import FeatureCache, ImageTransformConfig
    from calprompt.data.items import DatasetSplits, ImageLoader, Item
    from calprompt.engine.evaluate import Predictions
    from calprompt.experiments.config import RunConfig
    from calprompt.methods import PromptMethod


@dataclass
class RunContext:
    """What a protocol works with: the resolved config, the few-shot splits of every class, the loaded backbone, the
    image transform, the feature cache (or None), the run directory (a protocol keeps resume state under it) and a
    progress hook for long loops."""

    config: RunConfig
    splits: DatasetSplits
    backbone: ClipBackbone
    transform: ImageTransformConfig
    cache: FeatureCache | None
    out: Path
    progress: Callable | None = None
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Evaluation:
    """What a protocol measured: ``metrics`` (split key -> evaluation report, and scalars such as the fitted
    temperature; ``skipped``: what could not run and why) and the ``tensors`` behind them (logits, labels, text
    features, saved as ``predictions.safetensors``)."""

    metrics: dict[str, Any]
    tensors: dict[str, Tensor]


@dataclass
class Tuned:
    """The prompts a protocol tuned: the method (built for ``classnames`` with ``template``), the class names of each
    split it evaluates (``classes``) and what the tuning reports (``metrics["train"]``)."""

    method: PromptMethod
    classnames: list[str]
    template: str
    classes: dict[str, list[str]]
    train: dict[str, Any]


class Protocol(ABC):
    """One way of using a dataset in a run. Subclasses set ``name`` and register with `register_protocol`."""

    name: ClassVar[str]
    #: Whether the protocol evaluates classes the prompts were not tuned on (base-to-novel's novel half).
    evaluates_unseen_classes: ClassVar[bool] = False
    #: Whether each test image was predicted with prompts of its own (test-time tuning): the saved prompts are only
    #: the starting point, so predicting or evaluating other images with them would not be what the run measured.
    prompts_per_image: ClassVar[bool] = False

    @abstractmethod
    def check(self, config: RunConfig, splits: DatasetSplits) -> dict[str, str]:
        """Refuse, before any work, what cannot run on these splits; return what will be skipped, with the reason."""

    @abstractmethod
    def tune(self, context: RunContext) -> Tuned:
        """Build the method and tune its prompts (resuming from the run directory's checkpoint if there is one)."""

    @abstractmethod
    def evaluate(self, context: RunContext, method: PromptMethod) -> Evaluation:
        """Evaluate the tuned ``method`` (built for its tuned class names) on the protocol's splits."""

    @abstractmethod
    def classes(self, splits: DatasetSplits) -> dict[str, list[str]]:
        """The class names of each split the protocol evaluates, by split key (what the run record lists)."""

    def rebuild(self, config: RunConfig, splits: DatasetSplits) -> tuple[list[str], str]:
        """The class names and template a finished run's prompts were built for, from its data (for run directories
        written before they recorded them)."""
        raise NotImplementedError(f"protocol {self.name!r} cannot rebuild a run without its run record")


#: The protocol a sweep moves a class-specific method to when it asks for one with unseen classes: every class tuned
#: and evaluated (the few-shot protocol).
EVERY_CLASS_PROTOCOL = "all"


# ---------------------------------------------------------------------------------------------------------------------
# What every protocol (and the runner's transfer targets) uses
def check_prompts_reusable(config: RunConfig, run_dir: Path, use: str) -> None:
    """Refuse ``use`` (predicting images, evaluating another dataset) of a run whose protocol tuned a prompt per
    test image: its saved prompts are the starting point, not what the run measured."""
    if get_protocol(config.protocol).prompts_per_image:
        fail(
            "run",
            f"a run whose saved prompts are what it measured for {use}: {run_dir} is a --protocol "
            f"{config.protocol} run (each test image was tuned from its initial prompt, which is all it saved); run "
            f"--protocol {config.protocol} on those images instead (--dataset NAME; --init-run DIR starts from a "
            "trained run's prompts), or use the init run itself",
            str(run_dir),
        )


def check_method_fits(
    config: RunConfig, *, tuned: Sequence[str] = (), targets: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str]:
    """Refuse what a class-specific method cannot run: a protocol with unseen classes, an objective that needs
    prompts for outlier names, and a transfer target (``targets``: name -> class names) whose class list differs
    from the ``tuned`` one. Returns what does not apply to the run, with the reason (``metrics.json["skipped"]``:
    the novel split of a class-specific method, which reports show as n/a); nothing for other methods."""
    from calprompt.calibration import build_objective
    from calprompt.calibration.registry import OUTLIER_INPUTS
    from calprompt.methods import get_method

    method = get_method(config.method)
    if not method.class_specific:
        return {}
    why = f"{config.method} {method.class_specific_reason} and cannot name classes it was not tuned on"
    protocol = get_protocol(config.protocol)
    if protocol.evaluates_unseen_classes:
        expected = f"'all' for method {config.method!r} ({why}); use protocol: all (--protocol all)"
        fail("protocol", expected, config.protocol)
    needs = build_objective(config.calibration, **config.calibration_options).needs
    if needs & set(OUTLIER_INPUTS):
        fail(
            "calibration",
            f"an objective without outlier-name prompts for method {config.method!r} ({why}); "
            f"{config.calibration!r} needs them",
            config.calibration,
        )
    for name, classnames in (targets or {}).items():
        if list(classnames) != list(tuned):
            fail(
                f"eval_datasets entry {name!r}",
                f"a dataset with the {len(tuned)} tuned classes, in their order, for method {config.method!r} "
                f"({why}); drop it from eval_datasets",
                f"{len(classnames)} other classes",
            )
    return {NOVEL: f"{why}: tuned and evaluated on every class (protocol {config.protocol!r}), no novel split"}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (what the published few-shot code does before building data and prompts)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_split(
    context: RunContext,
    method: PromptMethod,
    items: Sequence[Item],
    loader: ImageLoader,
    cache_tag: tuple[str, str],
) -> Predictions:
    """Logits (and text features) of ``method`` on ``items``, with the run's device, precision, workers and cache."""
    from calprompt.engine.evaluate import predict

    config = context.config
    return predict(
        method,
        items,
        context.transform,
        loader=loader,
        device=config.device,
        precision=config.precision,
        cache=context.cache,
        cache_tag=cache_tag,
        num_workers=config.num_workers,
    )


def run_objective(config: RunConfig) -> CalibrationObjective:
    """The run's training objective: its calibration preset with the published constants of its method (DOR's weight
    follows the method) and the run's own overrides (``calibration_options``)."""
    from calprompt.calibration import build_objective

    return build_objective(config.calibration, method=config.method, **config.calibration_options)


def split_report(
    logits: Tensor, labels: Tensor, config: RunConfig, *, intervals: bool = False, proximity: Tensor | None = None
) -> dict[str, Any]:
    """One split's metrics (PIECE with the images' ``proximity``); the main splits (``intervals``) also get seeded
    bootstrap intervals, from the run's ``bootstrap`` resamples (unset:
    `calprompt.calibration.suite.RUN_BOOTSTRAP_RESAMPLES`)."""
    from calprompt.calibration import suite
    from calprompt.metrics import evaluate

    resamples = (suite.RUN_BOOTSTRAP_RESAMPLES if config.bootstrap is None else config.bootstrap) if intervals else 0
    report = evaluate(logits, labels, proximity=proximity, n_bins=config.n_bins, bootstrap=resamples, seed=config.seed)
    return report.to_dict()


# ---------------------------------------------------------------------------------------------------------------------
# The registry
PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: type[Protocol]) -> type[Protocol]:
    """Class decorator: make ``protocol`` available to runs by its ``name`` (duplicates raise)."""
    if protocol.name in PROTOCOLS:
        raise ValueError(f"Protocol {protocol.name!r} is already registered.")
    PROTOCOLS[protocol.name] = protocol()
    return protocol


def get_protocol(name: str) -> Protocol:
    """The registered protocol called ``name`` (unknown names raise with the known ones)."""
    _load_builtins()
    if name not in PROTOCOLS:
        fail_unknown("protocol", name, sorted(PROTOCOLS))
    return PROTOCOLS[name]


def available_protocols() -> list[str]:
    _load_builtins()
    return sorted(PROTOCOLS)


def _load_builtins() -> None:
    """Import every module of this package once, on first use of the registry, so that a new protocol is one file:
    its `register_protocol` runs then (as methods do)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if not module.name.startswith("_"):
                importlib.import_module(f"{__name__}.{module.name}")


_loaded = False
