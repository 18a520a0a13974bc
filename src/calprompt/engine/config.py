"""The training loop's settings, in a module of their own so that the loop (`calprompt.engine.train`) and what it
consumes (`calprompt.engine.data`) both import them without importing each other."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from calprompt._validation import check_choice, check_non_negative, check_non_negative_int, check_positive_int, fail
from calprompt.data.features import default_encode_batch_size
from calprompt.engine.precision import PRECISIONS

#: The training loop's optimizers (`TrainConfig.optimizer`).
OPTIMIZERS = ("sgd", "adam")
#: Adam's moment decay rates (torch's and Dassl's defaults).
ADAM_BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (SGD with momentum, or Adam; warm-up epoch, per-epoch cosine) and run mechanics.

    ``optimizer="adam"`` is torch's Adam with betas (0.9, 0.999) and L2 ``weight_decay`` added to the gradient, as
    Dassl's ``adam`` (TaskRes's published recipe); ``momentum`` applies to SGD only.
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    seed: int = 1
    device: str = "cpu"
    precision: str = "fp32"  # bf16 / fp16 autocast (GPU); the calibration terms always run in float32
    grad_accumulation: int = 1
    feature_cache: bool = True  # train on cached frozen image features when the method allows it
    distinct_views: int | None = None  # None: a fresh augmented view per epoch; k: cycle through k views
    checkpoint_every: int = 1  # epochs between checkpoints (when a checkpoint directory is given)
    encode_batch_size: int | None = None  # images per frozen-encoder batch; None: `default_encode_batch_size`

    def __post_init__(self) -> None:
        if self.encode_batch_size is None:
            object.__setattr__(self, "encode_batch_size", default_encode_batch_size(self.device))
        for name in ("epochs", "batch_size", "grad_accumulation", "checkpoint_every", "encode_batch_size"):
            check_positive_int(getattr(self, name), name)
        for name in ("lr", "momentum", "weight_decay", "warmup_lr"):
            check_non_negative(getattr(self, name), name)
        check_choice(self.precision, "precision", PRECISIONS)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        if self.distinct_views is not None:
            check_positive_int(self.distinct_views, "distinct_views")
        check_non_negative_int(self.seed, "seed")
        if self.warmup_epochs < 0 or (self.warmup_epochs >= self.epochs and self.epochs > 1):
            fail("warmup_epochs", f"an integer in [0, epochs={self.epochs})", self.warmup_epochs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
