"""The one training loop for every prompt-tuning method and calibration objective.

An explicit loop over arguments passed in: the method, the objective, the training data and a :class:`TrainConfig`.
All randomness is derived from ``(seed, epoch)`` (batch order and augmented views), so a run resumed from a checkpoint
after any epoch ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._io import CorruptFileError
from calprompt._validation import fail
from calprompt.calibration import CalibrationObjective, TextMoments, text_moments
from calprompt.calibration.registry import OUTLIER_INPUTS
from calprompt.data.views import stable_seed
from calprompt.engine.checkpoint import TrainingState, load_training_state, save_training_state
from calprompt.engine.config import ADAM_BETAS, TrainConfig  # TrainConfig: defined there, imported from here too
from calprompt.engine.data import TrainingData
from calprompt.engine.precision import autocast
from calprompt.engine.schedule import epoch_learning_rate
from calprompt.methods.base import MethodOutput, PromptMethod, total_loss

logger = logging.getLogger(__name__)
# TrainConfig fields that change how a run computes, not what: a checkpoint resumes across them.
_MECHANICS = ("device", "checkpoint_every", "encode_batch_size")
_SGD = ("optimizer", "sgd")  # left out of a checkpoint's identity: checkpoints from before Adam existed still resume
_MOMENTUM = "momentum_buffer"


@dataclass
class EpochLog:
    """Mean of each loss component over an epoch, the learning rate and the wall time."""

    epoch: int
    lr: float
    losses: dict[str, float]
    seconds: float


@dataclass
class TrainResult:
    history: list[EpochLog] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    used_feature_cache: bool = False


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    """Shuffled index batches of one epoch; the last incomplete batch is dropped when a full one exists (as Dassl)."""
    generator = torch.Generator().manual_seed(stable_seed("order", seed, epoch))
    order = torch.randperm(num_items, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class Trainer:
    """Trains one method under one objective; construct it, then call :meth:`fit`. Constructing touches no disk."""

    def __init__(
        self,
        method: PromptMethod,
        objective: CalibrationObjective,
        data: TrainingData,
        config: TrainConfig,
        *,
        checkpoint_dir: str | Path | None = None,
        progress: Callable[[Iterator[Any], int, str], Iterator[Any]] | None = None,
    ) -> None:
        self.method = method
        self.objective = objective
        self.data = data
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.progress = progress
        self.use_cache = config.feature_cache and method.image_encoder_untouched
        self.optimizer = self._build_optimizer()  # built again in `fit`, once the method saw its training set
        self.scaler = torch.amp.GradScaler(enabled=config.precision == "fp16" and config.device.startswith("cuda"))
        self.needs = objective.needs | method.needs
        self._frozen: dict[str, Any] = {}  # per-class-list teachers: zs_text_features, zs_text_moments
        self._saved_identity: dict[str, Any] | None = None  # what each checkpoint stores, built once / incrementally
        self._saved_history: list[dict[str, Any]] = []

    # ----------------------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Run (or resume) training to the last epoch; returns the per-epoch loss history."""
        result = TrainResult(used_feature_cache=self.use_cache)
        self.begin()
        if self.optimizer is None:
            logger.info("%s has no trainable parameters: nothing to train.", self.method.name)
            return result
        start = self._resume(result)
        self._prepare_frozen_targets()
        self.method.train()
        for epoch in range(start, self.config.epochs):
            result.history.append(self._run_epoch(epoch))
            self.method.on_epoch_end(epoch, self.config.epochs)
            last = epoch + 1 == self.config.epochs
            if self.checkpoint_dir is not None and ((epoch + 1) % self.config.checkpoint_every == 0 or last):
                self._save(epoch, result)
        self.method.on_fit_end()
        self.method.eval()
        return result

    def begin(self) -> None:
        """Show the method its training set (:meth:`PromptMethod.on_fit_start`: Tip-Adapter's cache, which may hold
        its parameters; CLAP's multipliers), then build the optimizer over its parameters. :meth:`fit` starts with
        this (a resume then overwrites the parameters); a run of 0 epochs calls only this."""
        first_views = self._view_seed_epoch(0)
        features = lambda: self.data.frozen_features(first_views, self.config)  # noqa: E731 (lazy: few need it)
        self.method.on_fit_start(features, self.data.labels.to(self.config.device))
        self.optimizer = self._build_optimizer()

    def _build_optimizer(self) -> torch.optim.Optimizer | None:
        """SGD (or Adam) over the method's trainable parameters; None when it has none."""
        params, config = list(self.method.trainable_parameters().values()), self.config
        if not params:
            return None
        if config.optimizer == "adam":
            return torch.optim.Adam(params, lr=config.lr, betas=ADAM_BETAS, weight_decay=config.weight_decay)
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)

    # ----------------------------------------------------------------------------------------------------------------
    def _prepare_frozen_targets(self) -> None:
        """Frozen zero-shot text features and their moments: once per class list, never per step."""
        if self.needs & set(OUTLIER_INPUTS):
            if self.data.outliers is None:
                fail("TrainingData.outliers", f"an OutlierPool (needed for {sorted(self.needs)})", None)
            self._frozen["outlier_features"] = self.data.outliers.features.to(self.method.backbone.device).float()
            self._outlier_sampler = self.data.outliers.sampler(self.config.seed)
        if not self.needs & {"zs_text_features", "zs_text_moments", "zs_logits"}:
            return
        if self.data.zero_shot_text_features is None:
            fail("TrainingData.zero_shot_text_features", f"given (needed for {sorted(self.needs)})", None)
        zero_shot = self.data.zero_shot_text_features.to(self.method.backbone.device)
        if zero_shot.shape[0] != len(self.method.classnames):
            fail("zero-shot text features", f"one row per class ({len(self.method.classnames)})", zero_shot.shape[0])
        self._frozen["zs_text_features"] = zero_shot.float()
        if "zs_text_moments" in self.needs:
            self._frozen["zs_text_moments"] = text_moments(self._frozen["zs_text_features"])

    def _view_seed_epoch(self, epoch: int) -> int:
        views = self.config.distinct_views
        return epoch if views is None else epoch % views

    def _run_epoch(self, epoch: int) -> EpochLog:
        config = self.config
        started = time.perf_counter()
        lr = epoch_learning_rate(
            epoch, lr=config.lr, epochs=config.epochs, warmup_epochs=config.warmup_epochs, warmup_lr=config.warmup_lr
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = epoch_batches(len(self.data.items), config.batch_size, config.seed, epoch)
        view_epoch = self._view_seed_epoch(epoch)
        if self.use_cache:
            epoch_features = self.data.frozen_features(view_epoch, config)  # (N, D)
            inputs = ((epoch_features[idx], None, idx) for idx in batches)
        else:
            inputs = ((None, images, idx) for images, idx in self.data.image_batches(view_epoch, batches, config))
        if self.progress is not None:
            inputs = self.progress(inputs, len(batches), f"epoch {epoch + 1}/{config.epochs}")
        names: list[str] = []
        totals: Tensor | None = None  # summed on the device: one host transfer per epoch, none per step
        self.optimizer.zero_grad(set_to_none=True)
        for step, (batch_features, images, idx) in enumerate(inputs):
            labels = self.data.labels[idx].to(config.device)
            parts = self._step(
                batch_features,
                images,
                labels,
                (epoch, step),
                update=(step + 1) % config.grad_accumulation == 0 or step + 1 == len(batches),
            )
            values = torch.stack([value.detach().float() for value in parts.values()])
            names, totals = list(parts), values if totals is None else totals + values
        sums = totals.tolist() if totals is not None else []
        losses = {key: value / max(len(batches), 1) for key, value in zip(names, sums, strict=True)}
        if not math.isfinite(losses.get("loss", 0.0)):
            raise FloatingPointError(
                f"The training loss became {losses['loss']} in epoch {epoch + 1}; lower the learning rate or use fp32."
            )
        seconds = time.perf_counter() - started
        logger.info(
            "epoch %d/%d lr %.3g loss %.4f (%.1fs)", epoch + 1, config.epochs, lr, losses.get("loss", 0), seconds
        )
        return EpochLog(epoch=epoch, lr=lr, losses=losses, seconds=seconds)

    def _step(
        self,
        features: Tensor | None,
        images: Tensor | None,
        labels: Tensor,
        position: tuple[int, int],
        *,
        update: bool,
    ) -> dict[str, Tensor]:
        """One forward/backward (and optimizer step when ``update``); returns the logged values as 0-dim tensors."""
        device = self.config.device
        if images is not None:
            images = images.to(device)
        self.method.on_step_start(*position)
        with autocast(device, self.config.precision):
            output = self.method(images) if features is None else self.method(image_features=features.to(device))
        inputs = self._inputs(output, labels, images, position)
        with full_precision_region(device):  # every loss term in float32, like the calibration terms
            loss, parts = self.objective.components(**{key: inputs[key] for key in self.objective.needs})
            terms = self.method.losses(inputs)
        clash = sorted(set(terms) & {*parts, "loss"})
        if clash:
            fail(f"{self.method.name}.losses()", "names distinct from the objective's components and 'loss'", clash)
        self.method.backward(loss, terms, lambda value: self.scaler.scale(value / self.config.grad_accumulation))
        if update:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return {**parts, **{name: value for name, (_, value) in terms.items()}, "loss": total_loss(loss, terms)}

    def _inputs(
        self, output: MethodOutput, labels: Tensor, images: Tensor | None, position: tuple[int, int]
    ) -> dict[str, Any]:
        """Every input the objective and the method need, each computed once, in float32; ``position`` is the
        step's (epoch, step), which seeds the outlier names drawn for it."""
        inputs: dict[str, Any] = {"logits": output.logits, "labels": labels}
        if self.needs & set(OUTLIER_INPUTS):
            drawn = self._outlier_sampler.indices(*position)
            names = [self.data.outliers.names[i] for i in drawn.tolist()]
            with autocast(self.config.device, self.config.precision):
                inputs["outlier_text_features"] = F.normalize(self.method.encode_text_for(names), dim=-1)
            inputs["zs_outlier_text_features"] = self._frozen["outlier_features"][
                drawn.to(self._frozen["outlier_features"].device)
            ]
        if "text_features" in self.needs:
            inputs["text_features"] = output.text_features
        if "image_features" in self.needs:
            inputs["image_features"] = output.image_features
        if self.needs & {"zs_image_features", "zs_logits"}:
            if output.frozen_image_features is not None:  # the forward pass had frozen CLIP's features
                frozen = output.frozen_image_features.detach()
            else:  # the tuned image features differ from frozen CLIP's
                with torch.no_grad(), autocast(self.config.device, self.config.precision):
                    frozen = F.normalize(self.method.backbone.encode_image(images), dim=-1)
            inputs["zs_image_features"] = frozen.float()
        if "zs_logits" in self.needs:
            zero_shot = self._frozen["zs_text_features"]
            inputs["zs_logits"] = self.method.backbone.logit_scale * inputs["zs_image_features"] @ zero_shot.t()
        inputs.update({key: value for key, value in self._frozen.items() if key in self.needs})
        return {key: _float32(value) for key, value in inputs.items() if key in self.needs | {"logits", "labels"}}

    # ----------------------------------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed."""
        return {
            "method": self.method.describe(),
            "objective": self.objective.to_dict(),
            "train": {k: v for k, v in self.config.to_dict().items() if k not in _MECHANICS and (k, v) != _SGD},
            "classnames": list(self.method.classnames),
            "num_items": len(self.data.items),
        }

    def _save(self, epoch: int, result: TrainResult) -> None:
        if self._saved_identity is None:  # fixed for the whole fit: built once, not per checkpoint
            self._saved_identity = self._identity()
        if len(self._saved_history) > len(result.history):  # a resume replaced the history
            self._saved_history.clear()
        self._saved_history.extend(asdict(log) for log in result.history[len(self._saved_history) :])
        state = TrainingState(
            epoch=epoch,
            parameters=self.method.trainable_state_dict(),
            optimizer=_momentum_buffers(self.optimizer, self.method),
            identity=self._saved_identity,
            history=list(self._saved_history),
            method_state={k: v.detach().clone().contiguous() for k, v in self.method.extra_state().items()},
        )
        save_training_state(self.checkpoint_dir, state)

    def _resume(self, result: TrainResult) -> int:
        if self.checkpoint_dir is None:
            return 0
        state = load_training_state(self.checkpoint_dir)
        if state is None:
            return 0
        if state.identity != json.loads(json.dumps(self._identity())):  # compare as stored (tuples become lists)
            raise ValueError(
                f"The checkpoint in {self.checkpoint_dir} belongs to a different run (method, objective, data or "
                "settings differ). Use another output directory, or delete the checkpoint to start over."
            )
        if not 0 <= state.epoch < self.config.epochs:
            raise CorruptFileError(
                f"The checkpoint in {self.checkpoint_dir} is of epoch {state.epoch + 1}, beyond this run's "
                f"{self.config.epochs} epochs. Delete {self.checkpoint_dir} to restart training from the first epoch "
                "(or rerun with --force)."
            )
        self.method.load_trainable_state_dict(state.parameters)
        self.method.load_extra_state(state.method_state)
        _load_momentum_buffers(self.optimizer, self.method, state.optimizer)
        result.history = [EpochLog(**log) for log in state.history]
        result.resumed_from_epoch = state.epoch + 1
        logger.info("Resuming from %s after epoch %d.", self.checkpoint_dir, state.epoch + 1)
        return state.epoch + 1


def full_precision_region(device: str) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device`` (loss terms compute in float32 whatever the model's precision)."""
    device_type = torch.device(device).type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _float32(value: Any) -> Any:
    """Half-precision tensors (and moments) upcast to float32; everything else unchanged."""
    if isinstance(value, TextMoments):
        return value.to(torch.float32)
    if isinstance(value, Tensor) and value.is_floating_point() and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def _state_key(name: str, entry: str) -> str:
    """The checkpoint key of one optimizer state tensor: the parameter's name for SGD's momentum (the format before
    Adam existed), ``name#entry`` for the others (Adam's ``exp_avg``, ``exp_avg_sq`` and ``step``)."""
    return name if entry == _MOMENTUM else f"{name}#{entry}"


def _momentum_buffers(optimizer: torch.optim.Optimizer, method: PromptMethod) -> dict[str, Tensor]:
    """Every tensor of the optimizer's per-parameter state (SGD without momentum keeps none)."""
    buffers = {}
    for name, param in method.trainable_parameters().items():
        for entry, value in optimizer.state.get(param, {}).items():
            if isinstance(value, Tensor):
                buffers[_state_key(name, entry)] = value.detach().clone().contiguous()
    return buffers


def _load_momentum_buffers(optimizer: torch.optim.Optimizer, method: PromptMethod, buffers: dict[str, Tensor]) -> None:
    entries = (_MOMENTUM, "exp_avg", "exp_avg_sq", "step")
    for name, param in method.trainable_parameters().items():
        for entry in entries:
            value = buffers.get(_state_key(name, entry))
            if value is not None:  # Adam's step count stays a float32 host scalar, the rest follows the parameter
                moved = value if entry == "step" else value.to(param.device, param.dtype)
                optimizer.state[param][entry] = moved.clone()
