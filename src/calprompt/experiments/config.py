"""The configuration of one run, its training recipes, and its resolution to explicit, typed values.

`RunConfig.resolved` is the one place a config is completed: the recipe's epochs, batch size, learning rate and
method options (``recipes.yaml`` beside this module), the training loop's optimizer defaults, absolute data and
weights paths, and method options and objective constants converted by the types of the settings they set. A
resolved config is marked as such, so resolving it again returns it unchanged: every layer above can ask for a
resolved config without paying for it twice.

Each field declares its command-line help and flags, and whether it is *mechanics* (how a run computes, not what:
device, worker processes, the text encoder's memory budget), which the run identity leaves out; `row_settings`
derives from these declarations what a run writes for reports to group it by.

Recipes: ``paper`` follows the published ViT-B/16 base-to-novel recipes; ``fast`` is a short schedule for smoke runs,
sweeps on CPUs and the toy world. Toy datasets (names starting with ``toy``) use their own entries because the tiny
backbone's logit scale and feature statistics differ from real CLIP's (see docs/toy-world.md).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from calprompt._parsing import parse_value
from calprompt._validation import (
    check_choice,
    check_dataclass_keys,
    check_non_negative,
    check_non_negative_int,
    check_positive_int,
    fail,
)
from calprompt.conventions import DEFAULT_TEXT_MEMORY_MB, PRECISIONS, TEST_TIME_PROTOCOL

RECIPE_NAMES = ("paper", "fast")
#: Fields of the training loop's `TrainConfig` that a run leaves as ``None`` for the recipe (or the loop) to set.
OPTIMIZER_FIELDS = ("optimizer", "momentum", "weight_decay", "warmup_epochs", "warmup_lr", "grad_accumulation")
_RECIPE_FIELDS = ("epochs", "batch_size", "lr", *OPTIMIZER_FIELDS, "options")
_ENTRY_KEYS = (*RECIPE_NAMES, "options", "datasets", "toy")
_RESOLVED = "_calprompt_resolved"  # set on the objects `RunConfig.resolved` returns (not a field: not compared)


def default_cache_dir() -> Path:
    """Where frozen image features are cached: ``$CALPROMPT_CACHE`` or ``~/.cache/calprompt``."""
    return Path(os.environ.get("CALPROMPT_CACHE", Path.home() / ".cache" / "calprompt")).expanduser()


def setting(default: Any, help: str, *flags: str, mechanics: bool = False, shown: str | None = None) -> Any:
    """A `RunConfig` field with its command-line help and flags (default flag: ``--field-name``); ``mechanics``
    fields change how a run computes, not what, and are left out of its identity; ``shown`` words the default in
    the help where the value alone would mislead."""
    return field(default=default, metadata={"help": help, "flags": flags, "mechanics": mechanics, "shown": shown})


@dataclass(frozen=True)
class RunConfig:
    """Everything one run depends on. ``epochs``/``batch_size``/``lr`` left as ``None`` come from the recipe, the
    optimizer fields left as ``None`` from the training loop (`calprompt.engine.config.TrainConfig`).

    ``protocol`` names what the run does with its data (`calprompt.experiments.protocols`): ``base2novel`` trains
    on the base half of the classes and evaluates base and novel test classes; ``all`` trains and evaluates on every
    class (the few-shot protocol). ``eval_datasets`` are evaluated too, with the tuned prompts and each target's own
    classes (cross-dataset transfer and domain shift, e.g. ``imagenet`` -> ``imagenet_v2``; ``toy`` ->
    ``toy-domain``); their data is read from ``root`` as well. Each field's help is the command line's.
    """

    dataset: str = setting("toy", "Dataset name (`calprompt datasets list`).", "--dataset", "-d")
    root: str | None = setting(None, "Data root holding the dataset folders (CoOp layout).")
    method: str = setting("coop", "Prompt-tuning method.", "--method", "-m")
    method_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "Method settings."})
    calibration: str = setting("ours", "Calibration objective preset.")
    calibration_options: dict[str, float] = field(default_factory=dict, metadata={"help": "Objective constants."})
    shots: int = setting(16, "Training images per class.")
    seed: int = setting(1, "Run seed (few-shot subset, initialisation, batch order, views).")
    backbone: str | None = setting(
        None,
        "open_clip architecture (ViT-B-16, with --pretrained openai), hf-hub:/local-dir: name, or toy.",
        shown="toy for the toy world's datasets; any other dataset must name one",
    )
    pretrained: str | None = setting(None, "Hub tag (openai, ...) or weights file.")
    protocol: str = setting("base2novel", "base2novel, all (train/test on every class) or test-time (per test image).")
    eval_datasets: tuple[str, ...] = field(
        default=(), metadata={"help": "Other datasets to evaluate the tuned prompts on (transfer, domain shift)."}
    )
    recipe: str = setting("paper", "paper or fast (epochs/batch/lr defaults).")
    epochs: int | None = setting(None, "Override the recipe's epochs.")
    batch_size: int | None = setting(None, "Override the recipe's batch size.")
    lr: float | None = setting(None, "Override the recipe's learning rate.")
    optimizer: str | None = setting(None, "Training optimizer: sgd (with momentum; default) or adam (TaskRes's).")
    momentum: float | None = setting(None, "SGD momentum (default 0.9).")
    weight_decay: float | None = setting(None, "SGD weight decay (default 5e-4).")
    warmup_epochs: int | None = setting(None, "Constant warm-up epochs before the cosine schedule (default 1).")
    warmup_lr: float | None = setting(None, "Learning rate of the warm-up epochs (default 1e-5).")
    grad_accumulation: int | None = setting(None, "Batches accumulated per update (default 1).")
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...", mechanics=True)
    precision: str = setting("fp32", "fp32, or bf16/fp16 autocast (GPU).")
    feature_cache: bool = setting(True, "Train on cached frozen image features when the method allows it.")
    distinct_views: int | None = setting(None, "Cycle through this many augmented views.", "--views")
    num_workers: int = setting(0, "Image loading worker processes.", "--workers", mechanics=True)
    text_memory_mb: float = setting(
        float(DEFAULT_TEXT_MEMORY_MB),
        "Activations (MB) a text-encoder gradient pass may keep; above it, prompts are encoded in chunks recomputed "
        "in backward (same gradients, bounded memory).",
        mechanics=True,
    )
    n_bins: int = setting(10, "Bins of the calibration errors (ECE, MCE, ...).")
    dac_k: int = setting(5, "DAC's nearest base classes (lowered to the number of base classes when fewer).")
    bootstrap: int | None = setting(
        None, "Bootstrap resamples behind the intervals of raw base and novel test (default 1000; 0: no intervals)."
    )
    skip_missing: bool = setting(False, "Drop (and count) listed images that are missing instead of failing.")
    # Test-time runs (--protocol test-time, `calprompt.experiments.protocols.test_time`); other protocols ignore
    # these, and leave them out of their identity and table rows (`TEST_TIME_FIELDS`).
    tta_views: int = setting(64, "Test-time: views per test image, the test view included (TPT: 64).")
    tta_confident: float = setting(
        0.1, "Test-time: fraction of the views kept as confident (lowest entropy; TPT: 0.1).", "--confident-fraction"
    )
    tta_steps: int = setting(1, "Test-time: optimisation steps per image (0: the initial prompt's predictions).")
    tta_lr: float = setting(5e-3, "Test-time learning rate (TPT: 5e-3).")
    tta_optimizer: str = setting("adamw", "Test-time optimizer: adamw (TPT's) or sgd.")
    tta_augmix: bool | None = setting(
        None,
        "Test-time: AugMix on the random views.",
        shown="as TPT: on, except for the ImageNet family",
    )
    tta_batch: int = setting(
        16, "Test-time: images tuned at once, one context each (results do not depend on it).", mechanics=True
    )
    init_run: str | None = setting(None, "Test-time: start from this finished run's prompts (same backbone).")
    tta_images_per_class: int | None = setting(
        None,
        "Test-time: tune and evaluate only the first K test images of each class, in dataset order (the same "
        "images for every variant and seed, so rows stay paired).",
        shown="every test image",
    )

    def __post_init__(self) -> None:
        check_positive_int(self.shots, "shots")
        check_choice(self.recipe, "recipe", RECIPE_NAMES)
        check_positive_int(self.n_bins, "n_bins")
        check_positive_int(self.dac_k, "dac_k")
        if self.bootstrap is not None:
            check_non_negative_int(self.bootstrap, "bootstrap")
        if not isinstance(self.eval_datasets, list | tuple) or not all(isinstance(n, str) for n in self.eval_datasets):
            fail("eval_datasets", "a list of dataset names", self.eval_datasets)
        object.__setattr__(self, "eval_datasets", tuple(self.eval_datasets))  # JSON gives a list
        check_non_negative_int(self.seed, "seed")
        if self.epochs is not None:
            check_non_negative_int(self.epochs, "epochs")
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        for name in ("lr", "momentum", "weight_decay", "warmup_lr"):
            if getattr(self, name) is not None:
                check_non_negative(getattr(self, name), name)  # refuses nan and infinities, naming the setting
        memory = self.text_memory_mb
        if isinstance(memory, bool) or not isinstance(memory, int | float) or not memory > 0:
            fail("text_memory_mb", "a number of megabytes > 0", memory)
        if self.warmup_epochs is not None:
            check_non_negative_int(self.warmup_epochs, "warmup_epochs")
        if self.grad_accumulation is not None:
            check_positive_int(self.grad_accumulation, "grad_accumulation")
        if self.optimizer is not None:
            from calprompt.engine.config import OPTIMIZERS

            check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        if self.distinct_views is not None and (
            isinstance(self.distinct_views, bool) or not isinstance(self.distinct_views, int) or self.distinct_views < 1
        ):
            fail(
                "distinct_views",
                "a positive integer (--views: augmented views to cycle through), or unset",
                self.distinct_views,
            )
        check_choice(self.precision, "precision", PRECISIONS)
        check_positive_int(self.tta_batch, "tta_batch")
        if self.tta_images_per_class is not None:
            check_positive_int(self.tta_images_per_class, "tta_images_per_class")
        if self.tta_augmix is not None and not isinstance(self.tta_augmix, bool):
            fail("tta_augmix", "true, false or unset (as TPT: on except for the ImageNet family)", self.tta_augmix)
        if self.init_run is not None and (not isinstance(self.init_run, str) or not self.init_run.strip()):
            fail("init_run", "the directory of a finished run", self.init_run)
        if self.backbone is not None and (not isinstance(self.backbone, str) or not self.backbone.strip()):
            fail("backbone", "a backbone name (toy, ViT-B-16, hf-hub:..., local-dir:...)", self.backbone)

    @property
    def is_resolved(self) -> bool:
        return getattr(self, _RESOLVED, False)

    def resolved(self) -> RunConfig:
        """A copy with every default made explicit and every name checked: the recipe's epochs, batch size, learning
        rate and method options, the training loop's optimizer defaults, the data root and a weights file as
        absolute paths, and options converted by the types of the settings they set. Unknown dataset, method,
        calibration or target names raise. A resolved config is returned as it is."""
        if self.is_resolved:
            return self
        changes: dict[str, Any] = {}
        if self.root is not None and os.path.abspath(os.path.expanduser(self.root)) != self.root:
            changes["root"] = os.path.abspath(os.path.expanduser(self.root))  # "..", "~" and the cwd resolved
        if self.pretrained is not None and os.path.isfile(os.path.expanduser(self.pretrained)):
            absolute = os.path.abspath(os.path.expanduser(self.pretrained))  # a weights file, not a hub tag
            if absolute != self.pretrained:
                changes["pretrained"] = absolute
        if self.init_run is not None and os.path.abspath(os.path.expanduser(self.init_run)) != self.init_run:
            changes["init_run"] = os.path.abspath(os.path.expanduser(self.init_run))
        if self.protocol == TEST_TIME_PROTOCOL and self.tta_augmix is None:
            from calprompt.data.test_views import uses_augmix

            changes["tta_augmix"] = uses_augmix(self.dataset)
        options = dict(self.method_options)
        explicit = None not in (self.epochs, self.batch_size, self.lr)
        recipe = None
        if not explicit or self.method in recipe_table():  # a method without a recipe runs on explicit settings
            recipe = resolve_recipe(self.recipe, self.method, self.dataset)
            for name in ("epochs", "batch_size", "lr"):
                if getattr(self, name) is None:
                    changes[name] = getattr(recipe, name)
            options = {**recipe.options, **self.method_options}  # the user's options override the recipe's
        missing = [name for name in OPTIMIZER_FIELDS if getattr(self, name) is None]
        if missing:
            from calprompt.engine.config import TrainConfig

            defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
            defaults.update(recipe.optimizer if recipe is not None else {})  # a recipe's own (CLIPCalib: no decay)
            changes.update({name: defaults[name] for name in missing})
        changes["method_options"] = coerce_options(options, method_option_types(self.method), self.method)
        changes["calibration_options"] = coerce_options(
            self.calibration_options, calibration_option_types(self.calibration), self.calibration
        )
        if self.backbone is None:
            changes["backbone"] = default_backbone(self.dataset)
        resolved = replace(self, **changes)
        _check_names(resolved)
        object.__setattr__(resolved, _RESOLVED, True)
        return resolved

    def to_dict(self) -> dict[str, Any]:
        """A JSON-native dict (lists, not tuples), equal to its own JSON round trip."""
        return {**dataclasses.asdict(self), "eval_datasets": list(self.eval_datasets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        check_dataclass_keys(cls, data, "run config")
        return cls(**data)


#: RunConfig fields that change how a run computes, not what (left out of its identity).
MECHANICS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("mechanics"))
#: The settings of test-time runs: a run of another protocol ignores them, so its identity and row leave them out.
TEST_TIME_FIELDS = (*(f.name for f in dataclasses.fields(RunConfig) if f.name.startswith("tta_")), "init_run")
#: The training settings: a test-time run trains nothing (its method options, recipe's included, are resolved into
#: ``method_options``), so its identity, row and config.json leave them out.
TRAINING_FIELDS = (
    *("shots", "recipe", "epochs", "batch_size", "lr"),
    *OPTIMIZER_FIELDS,
    *("feature_cache", "distinct_views"),
)


def ignored_fields(protocol: str) -> tuple[str, ...]:
    """The settings a run of ``protocol`` does not use: the training ones for test-time runs, the test-time ones
    for the others."""
    return TRAINING_FIELDS if protocol == TEST_TIME_PROTOCOL else TEST_TIME_FIELDS


def _fields_without(config: RunConfig, names: tuple[str, ...]) -> dict[str, Any]:
    data = config.to_dict()
    for name in names:
        data.pop(name)
    return data


def protocol_fields(config: RunConfig) -> dict[str, Any]:
    """``config.to_dict()`` without the settings its protocol ignores (`ignored_fields`)."""
    return _fields_without(config, ignored_fields(config.protocol))


def written_fields(config: RunConfig) -> dict[str, Any]:
    """What a run's config.json holds: every field but the training ones of a test-time run (a training run's file
    keeps the test-time fields it always held, so older readers and files agree)."""
    return _fields_without(config, TRAINING_FIELDS if config.protocol == TEST_TIME_PROTOCOL else ())


#: Settings added after runs were stored, with the value that is the behaviour from before they existed: at that
#: value a run's identity and table row leave them out, so stored runs keep their ids and share rows with new ones.
UNSET_AS_BEFORE: dict[str, Any] = {"bootstrap": None, "optimizer": "sgd", "tta_images_per_class": None}


def without_unset(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without the `UNSET_AS_BEFORE` ones at their old value."""
    return {k: v for k, v in settings.items() if not (k in UNSET_AS_BEFORE and v == UNSET_AS_BEFORE[k])}


#: Fields that never tell table rows apart: the mechanics, and where and on what a run ran (the tables' axes).
NOT_ROW_FIELDS = frozenset({*MECHANICS, "dataset", "seed", "root", "eval_datasets", "skip_missing", "feature_cache"})


def _check_names(config: RunConfig) -> None:
    """Unknown dataset, method, calibration or target names fail here, not hours later in a worker (the protocol is
    looked up by whoever runs it: protocols build on this module)."""
    from calprompt.clip.loading import check_backbone_name
    from calprompt.data import get_dataset_spec

    get_dataset_spec(config.dataset)
    check_backbone_name(config.backbone)
    for name in config.eval_datasets:
        spec = get_dataset_spec(name)  # unknown names raise with the known ones
        if spec.name == get_dataset_spec(config.dataset).name:
            raise ValueError(
                f"Expected `eval_datasets` to name other datasets than the training one, got {name!r}: its test "
                "split is already evaluated (base and novel classes)."
            )


def check_machine(config: RunConfig, *, precision: bool = True) -> None:
    """Refuse, before any work, a device this machine lacks, and (``precision``) bf16/fp16 on a CPU, where autocast
    would only change the numbers."""
    import torch

    try:
        device = torch.device(config.device)
    except (RuntimeError, TypeError):
        fail("device", "cpu, cuda, cuda:N or mps", config.device)
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        fail("device", f"a device of this machine (it has no {config.device!r}); pass --device cpu", config.device)
    if precision and device.type == "cpu" and config.precision != "fp32":
        fail(
            "precision",
            "fp32 on a CPU (bf16/fp16 autocast is for GPUs; on a CPU it only changes the numbers); pass "
            "--precision fp32, or --device cuda on a machine with a GPU",
            config.precision,
        )


def default_backbone(dataset: str) -> str:
    """The backbone of a run that names none: the toy CLIP for the toy world's datasets (generated, no data root);
    any other dataset must name one, since the toy CLIP knows only the toy world's words and pictures."""
    from calprompt.data import get_dataset_spec

    spec = get_dataset_spec(dataset)
    if spec.needs_root:
        fail(
            "backbone",
            f"given for dataset {spec.name!r} (the default, the toy CLIP, knows only the toy world): pass "
            "--backbone ViT-B-16 --pretrained openai (or another CLIP), or --backbone toy to tune the toy CLIP on it",
            None,
        )
    return "toy"


def check_schedule(config: RunConfig) -> None:
    """A schedule whose every epoch is warm-up never uses ``lr``: refused rather than silently trained at
    ``warmup_lr`` (the run would record a learning rate it never used). Checked for runs to come (the producer
    `calprompt.experiments.settings.run_config` and the runner), not when a finished run is read back."""
    config = config.resolved()
    entry = recipe_table().get(config.method)
    if entry is not None and int(entry["paper"]["epochs"]) == 0:
        return  # a method that does not train (zero-shot CLIP): no learning rate to lose
    if config.epochs >= 1 and config.warmup_epochs >= config.epochs:
        fail(
            "warmup_epochs",
            f"below `epochs` ({config.epochs}) so that lr {config.lr} is ever used (every epoch would be warm-up at "
            f"warmup_lr {config.warmup_lr}); pass --warmup-epochs 0, or --epochs {config.warmup_epochs + 1} or more",
            config.warmup_epochs,
        )


def row_settings(config: RunConfig) -> dict[str, Any]:
    """The settings that tell a run's table row apart from others (flat, ``method_options.n_ctx`` style keys):
    every field but `NOT_ROW_FIELDS`, without the epochs, batch size and learning rate the recipe gave it. A run
    writes them, so reports group runs without knowing the recipes."""
    config = config.resolved()
    flat = without_unset(_flatten(protocol_fields(config)))
    settings = {k: v for k, v in flat.items() if k not in NOT_ROW_FIELDS}
    if config.init_run is not None and config.protocol == TEST_TIME_PROTOCOL:
        settings["init_run"] = init_run_label(config.init_run)  # its path differs per seed; its kind does not
    try:
        recipe = resolve_recipe(config.recipe, config.method, config.dataset)
    except ValueError:
        return settings  # a method without a recipe: every value was given
    for name in ("epochs", "batch_size", "lr"):
        if settings.get(name) == getattr(recipe, name):
            settings.pop(name)
    return settings


def init_run_label(init_run: str) -> str:
    """What a test-time run starts from, as its table row names it: the init run's ``method + calibration`` (from
    its config.json; the folder's name when that cannot be read)."""
    import json

    from calprompt.experiments.rundir import CONFIG_FILE  # rundir builds on this module

    try:
        data = json.loads((Path(init_run) / CONFIG_FILE).read_text(encoding="utf-8"))
        method, calibration = str(data["method"]), str(data["calibration"])
    except (OSError, ValueError, KeyError, TypeError):
        return Path(init_run).name
    return method if calibration == "none" else f"{method} + {calibration}"


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in _flatten(value).items()})
        else:
            flat[key] = value
    return flat


# ---------------------------------------------------------------------------------------------------------------------
# Options typed by their target: the method's config dataclass fields and the calibration preset's constants
def coerce_options(values: Mapping[str, Any], hints: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Each of ``values`` converted by its hint; an unknown key raises naming it and the known ones."""
    unknown = sorted(set(values) - set(hints))
    if unknown:
        fail(f"{owner} options", f"among {sorted(hints) or 'none (it takes no options)'}", unknown)
    return {key: parse_value(value, hints[key], f"{owner} option {key}") for key, value in values.items()}


@functools.cache
def type_hints(cls: type) -> Mapping[str, Any]:
    """``typing.get_type_hints(cls)``, resolved once per class: planning a sweep of thousands of runs asks for the
    same dataclasses' hints twice per run, and resolving string annotations is slow."""
    return types.MappingProxyType(typing.get_type_hints(cls))


def method_option_types(method: str) -> dict[str, Any]:
    """Field name -> type of the config dataclass of ``method`` (``template`` is set from the dataset)."""
    from calprompt.methods import get_method

    config_type = get_method(method).config_type
    hints = type_hints(config_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_type) if f.name != "template"}


def calibration_option_types(calibration: str) -> dict[str, Any]:
    """Constant name -> float for the calibration preset ``calibration``."""
    from calprompt.calibration.presets import OBJECTIVE_PRESETS

    if calibration not in OBJECTIVE_PRESETS:
        fail("calibration", f"one of {', '.join(OBJECTIVE_PRESETS)}", calibration)
    return dict.fromkeys(OBJECTIVE_PRESETS[calibration].defaults, float)


# ---------------------------------------------------------------------------------------------------------------------
# Recipes
@dataclass(frozen=True)
class Recipe:
    """One resolved schedule; ``options`` are method settings of the published recipe (user options win)."""

    epochs: int
    batch_size: int
    lr: float
    options: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)  # OPTIMIZER_FIELDS the recipe sets (else the loop's)


@functools.cache
def recipe_table() -> dict[str, dict[str, Any]]:
    """The parsed, checked ``recipes.yaml``: method -> entry."""
    import yaml

    text = resources.files("calprompt.experiments").joinpath("recipes.yaml").read_text(encoding="utf-8")
    table = yaml.safe_load(text)
    for method, entry in table.items():
        where = f"recipes.yaml: {method}"
        _check_keys(entry, _ENTRY_KEYS, where)
        for name in RECIPE_NAMES:
            if name not in entry:
                fail(f"{where}.{name}", "a recipe (epochs, batch_size, lr)", None)
            _check_recipe(entry[name], f"{where}.{name}", complete=True)
        for scope, departures in [("toy", entry.get("toy", {})), *entry.get("datasets", {}).items()]:
            _check_keys(departures, (*RECIPE_NAMES, "options"), f"{where}.{scope}")
            for name in RECIPE_NAMES:
                _check_recipe(departures.get(name, {}), f"{where}.{scope}.{name}", complete=False)
    return table


def resolve_recipe(recipe: str, method: str, dataset: str) -> Recipe:
    """The recipe for ``method`` on ``dataset``; unknown combinations raise with the known ones."""
    if recipe not in RECIPE_NAMES:
        fail("recipe", f"one of {RECIPE_NAMES}", recipe)
    table = recipe_table()
    if method not in table:
        fail("method", f"one with a recipe ({', '.join(sorted(table))}), or pass epochs/batch size/lr", method)
    entry = table[method]
    scope = entry.get("toy", {}) if dataset.startswith("toy") else entry.get("datasets", {}).get(dataset.lower(), {})
    values = {**entry[recipe], **scope.get(recipe, {})}
    options = {**entry.get("options", {}), **entry[recipe].get("options", {})}
    options.update({**scope.get("options", {}), **scope.get(recipe, {}).get("options", {})})
    resolved = Recipe(int(values["epochs"]), int(values["batch_size"]), float(values["lr"]))
    optimizer = {name: values[name] for name in OPTIMIZER_FIELDS if name in values}
    return replace(resolved, options=options, optimizer=optimizer)


def _check_keys(mapping: Any, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(mapping, dict):
        fail(where, "a mapping", type(mapping).__name__)
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        fail(where, f"keys among {allowed}", unknown)


def _check_recipe(values: Any, where: str, *, complete: bool) -> None:
    _check_keys(values, _RECIPE_FIELDS, where)
    missing = [key for key in ("epochs", "batch_size", "lr") if key not in values]
    if complete and missing:
        fail(where, "epochs, batch_size and lr", f"missing {missing}")


def has_recipe(recipe: str, method: str, dataset: str) -> bool:
    """Whether ``method`` has a recipe made for ``dataset``'s family: toy datasets need the method's ``toy`` entry
    for ``recipe`` unless the method does not train. Sweeps over every registered method skip the others."""
    entry = recipe_table().get(method)
    if entry is None or recipe not in RECIPE_NAMES:
        return False
    if dataset.startswith("toy"):
        return recipe in entry.get("toy", {}) or int(entry[recipe]["epochs"]) == 0
    return True
