"""The configuration of one run, resolved to explicit values and hashed into a stable run id."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calprompt._validation import check_choice, check_dataclass_keys, check_non_negative, check_positive_int, fail
from calprompt.conventions import DEFAULT_TEXT_MEMORY_MB
from calprompt.experiments.recipes import RECIPE_NAMES, recipe_table, resolve_recipe

PROTOCOLS = ("base2novel", "all")


def default_cache_dir() -> Path:
    """Where frozen image features are cached: ``$CALPROMPT_CACHE`` or ``~/.cache/calprompt``."""
    return Path(os.environ.get("CALPROMPT_CACHE", Path.home() / ".cache" / "calprompt")).expanduser()


def setting(default: Any, help: str, *flags: str) -> Any:
    """A `RunConfig` field with its command-line help and flags (default flag: ``--field-name``)."""
    return field(default=default, metadata={"help": help, "flags": flags})


#: Fields that the training loop's `TrainConfig` takes under the same names; ``None`` means the loop's default.
OPTIMIZER_FIELDS = ("momentum", "weight_decay", "warmup_epochs", "warmup_lr", "grad_accumulation")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run depends on. ``epochs``/``batch_size``/``lr`` left as ``None`` come from the recipe, the
    optimizer fields left as ``None`` from the training loop (`calprompt.engine.train.TrainConfig`).

    ``protocol="base2novel"`` trains on the base half of the classes and evaluates base and novel test classes;
    ``"all"`` trains and evaluates on every class (the few-shot protocol). ``eval_datasets`` are evaluated too, with
    the tuned prompts and each target's own classes (cross-dataset transfer and domain shift, e.g. ``imagenet`` ->
    ``imagenet_v2``; ``toy`` -> ``toy-domain``); their data is read from ``root`` as well. Each field's help is the
    command line's (`calprompt train`).
    """

    dataset: str = setting("toy", "Dataset name (`calprompt datasets list`).", "--dataset", "-d")
    root: str | None = setting(None, "Data root holding the dataset folders (CoOp layout).")
    method: str = setting("coop", "Prompt-tuning method.", "--method", "-m")
    method_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "Method settings."})
    calibration: str = setting("ours", "Calibration objective preset.")
    calibration_options: dict[str, float] = field(default_factory=dict, metadata={"help": "Objective constants."})
    shots: int = setting(16, "Training images per class.")
    seed: int = setting(1, "Run seed (few-shot subset, initialisation, batch order, views).")
    backbone: str = setting("toy", "open_clip architecture, hf-hub:/local-dir: name, or toy.")
    pretrained: str | None = setting(None, "Hub tag (openai, ...) or weights file.")
    protocol: str = setting("base2novel", "base2novel, or all (train/test on every class).")
    eval_datasets: tuple[str, ...] = field(
        default=(), metadata={"help": "Other datasets to evaluate the tuned prompts on (transfer, domain shift)."}
    )
    recipe: str = setting("paper", "paper or fast (epochs/batch/lr defaults).")
    epochs: int | None = setting(None, "Override the recipe's epochs.")
    batch_size: int | None = setting(None, "Override the recipe's batch size.")
    lr: float | None = setting(None, "Override the recipe's learning rate.")
    momentum: float | None = setting(None, "SGD momentum (default 0.9).")
    weight_decay: float | None = setting(None, "SGD weight decay (default 5e-4).")
    warmup_epochs: int | None = setting(None, "Constant warm-up epochs before the cosine schedule (default 1).")
    warmup_lr: float | None = setting(None, "Learning rate of the warm-up epochs (default 1e-5).")
    grad_accumulation: int | None = setting(None, "Batches accumulated per update (default 1).")
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...")
    precision: str = setting("fp32", "fp32, or bf16/fp16 autocast (GPU).")
    feature_cache: bool = setting(True, "Train on cached frozen image features when the method allows it.")
    distinct_views: int | None = setting(None, "Cycle through this many augmented views.", "--views")
    num_workers: int = setting(0, "Image loading worker processes.", "--workers")
    text_memory_mb: float = setting(
        float(DEFAULT_TEXT_MEMORY_MB),
        "Activations (MB) a text-encoder gradient pass may keep; above it, prompts are encoded in chunks recomputed "
        "in backward (same gradients, bounded memory).",
    )
    n_bins: int = setting(10, "Bins of the calibration errors (ECE, MCE, ...).")
    dac_k: int = setting(5, "DAC's nearest base classes (lowered to the number of base classes when fewer).")
    skip_missing: bool = setting(False, "Drop (and count) listed images that are missing instead of failing.")

    def __post_init__(self) -> None:
        check_positive_int(self.shots, "shots")
        check_choice(self.protocol, "protocol", PROTOCOLS)
        check_choice(self.recipe, "recipe", RECIPE_NAMES)
        check_positive_int(self.n_bins, "n_bins")
        check_positive_int(self.dac_k, "dac_k")
        if not isinstance(self.eval_datasets, list | tuple) or not all(isinstance(n, str) for n in self.eval_datasets):
            fail("eval_datasets", "a list of dataset names", self.eval_datasets)
        object.__setattr__(self, "eval_datasets", tuple(self.eval_datasets))  # JSON gives a list
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            fail("seed", "an integer >= 0", self.seed)
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 0):
            fail("epochs", "an integer >= 0", self.epochs)
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        for name in ("lr", "momentum", "weight_decay", "warmup_lr"):
            if getattr(self, name) is not None:
                check_non_negative(getattr(self, name), name)  # refuses nan and infinities, naming the setting
        memory = self.text_memory_mb
        if isinstance(memory, bool) or not isinstance(memory, int | float) or not memory > 0:
            fail("text_memory_mb", "a number of megabytes > 0", memory)
        for name in ("warmup_epochs", "grad_accumulation"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                fail(name, "an integer >= 0", value)

    def resolved(self) -> RunConfig:
        """A copy with every default made explicit: the recipe's epochs, batch size, learning rate and method options,
        the training loop's optimizer defaults, and the data root and a weights file as absolute paths."""
        changes: dict[str, Any] = {}
        if self.root is not None and os.path.abspath(os.path.expanduser(self.root)) != self.root:
            changes["root"] = os.path.abspath(os.path.expanduser(self.root))  # "..", "~" and the cwd resolved
        if self.pretrained is not None and os.path.isfile(os.path.expanduser(self.pretrained)):
            absolute = os.path.abspath(os.path.expanduser(self.pretrained))  # a weights file, not a hub tag
            if absolute != self.pretrained:
                changes["pretrained"] = absolute
        explicit = None not in (self.epochs, self.batch_size, self.lr)
        if not explicit or self.method in recipe_table():  # a method without a recipe runs on explicit settings
            recipe = resolve_recipe(self.recipe, self.method, self.dataset)
            for name in ("epochs", "batch_size", "lr"):
                if getattr(self, name) is None:
                    changes[name] = getattr(recipe, name)
            options = {**recipe.options, **self.method_options}  # the user's options override the recipe's
            if options != self.method_options:
                changes["method_options"] = options
        missing = [name for name in OPTIMIZER_FIELDS if getattr(self, name) is None]
        if missing:
            from calprompt.engine.train import TrainConfig

            defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
            changes.update({name: defaults[name] for name in missing})
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-native dict (lists, not tuples), equal to its own JSON round trip."""
        return {**dataclasses.asdict(self), "eval_datasets": list(self.eval_datasets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        check_dataclass_keys(cls, data, "run config")
        return cls(**data)

    def run_id(self) -> str:
        """A short stable hash of what determines the results (device and worker count excluded; root absolute).

        It names the run's directory in the results store; the full identity (`calprompt.experiments.identity`)
        adds the data and weights fingerprints.
        """
        from calprompt.experiments.identity import canonical_hash, config_record

        return canonical_hash(config_record(self))[:16]
