"""Contrastive pretraining of the toy CLIP on the toy world: staged recipe, resumable, seeded.

Every step's batch is a pure function of (seed, step), and the model has no dropout, so a resumed run continues
exactly where it stopped. The result is a compact checkpoint (`toy_clip.safetensors` + `toy_clip.json`) in `out_dir`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from calprompt._validation import check_non_negative, check_non_negative_int, check_positive_int, fail
from calprompt.toy.captions import mention_probability
from calprompt.toy.downstream import TOY_DATASETS
from calprompt.toy.model import DEFAULT_INIT_LOGIT_SCALE, build_toy_clip, images_to_tensor, save_toy_checkpoint
from calprompt.toy.styles import STYLES
from calprompt.toy.vocab import tokenizer
from calprompt.toy.world import DEFAULT_STYLE_WEIGHTS, pretraining_batch, style_probabilities
from calprompt.toy.zeroshot import evaluate_zero_shot

logger = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)
CHECKPOINT_NAME = "toy_clip.safetensors"


@dataclass(frozen=True)
class Stage:
    """A stretch of pretraining with its own peak lr, style mix and style-mention probability (per style or one)."""

    name: str
    steps: int
    lr: float
    style_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_STYLE_WEIGHTS))
    p_mention: float | Mapping[str, float] = 0.85
    warmup: int = 50

    def __post_init__(self) -> None:
        check_positive_int(self.steps, "steps")
        if check_non_negative(self.lr, "lr") == 0:
            fail("lr", "a positive number", self.lr)
        check_non_negative(self.warmup, "warmup")
        style_probabilities(self.style_weights)
        for style in STYLES:
            mention_probability(self.p_mention, style)

    def lr_at(self, step: int) -> float:
        """Linear warm-up over min(warmup, steps // 2) steps, then cosine decay to 0 at the end of the stage."""
        warmup = min(int(self.warmup), self.steps // 2)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        return 0.5 * self.lr * (1 + math.cos(math.pi * progress))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["style_weights"] = dict(self.style_weights)
        if isinstance(self.p_mention, Mapping):
            data["p_mention"] = dict(self.p_mention)
        return data


def _fade(p_inverted: float) -> dict[str, float]:
    return {**dict.fromkeys(STYLES, 0.85), "inverted": p_inverted}


# The recipe of two throwaway prototypes (docs/toy-world.md), with twice the photo stage (shape was still the
# factor being learnt): photos first, then the style mix with styles usually named, then the inverted style named
# less and less, so that "a photo of a {}." misdescribes inverted images while "an inverted image of a {}." fits.
DEFAULT_RECIPE: tuple[Stage, ...] = (
    Stage("photos", 3000, 2e-3, {"photo": 1.0}, 0.85, warmup=100),
    Stage("styles", 1000, 1e-3, DEFAULT_STYLE_WEIGHTS, 0.85),
    Stage("fade-0.5", 500, 5e-4, DEFAULT_STYLE_WEIGHTS, _fade(0.5)),
    Stage("fade-0.25", 500, 5e-4, DEFAULT_STYLE_WEIGHTS, _fade(0.25)),
)


def scale_recipe(stages: Sequence[Stage], total_steps: int) -> tuple[Stage, ...]:
    """The recipe shrunk or stretched to `total_steps` (largest-remainder rounding; stages left empty are dropped)."""
    check_positive_int(total_steps, "total_steps")
    weights = np.array([s.steps for s in stages], dtype=float)
    exact = weights / weights.sum() * total_steps
    steps = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - steps), kind="stable")[: total_steps - int(steps.sum())]:
        steps[i] += 1
    return tuple(
        Stage(s.name, int(n), s.lr, s.style_weights, s.p_mention, min(s.warmup, int(n)))
        for s, n in zip(stages, steps, strict=True)
        if n > 0
    )


@dataclass(frozen=True)
class PretrainResult:
    """Where the checkpoint went, how long training took and the final zero-shot metrics per toy dataset."""

    checkpoint: Path
    steps: int
    seconds: float
    zero_shot: dict[str, dict[str, float]]


class _Batches(torch.utils.data.Dataset):
    """Map-style dataset whose item `step` is that step's whole batch, so DataLoader workers can prefetch it."""

    def __init__(self, stages: Sequence[Stage], batch_size: int, seed: int) -> None:
        self.stage_of_step = [s for s in stages for _ in range(s.steps)]
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return len(self.stage_of_step)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        stage = self.stage_of_step[step]
        rng = np.random.default_rng([self.seed, step])
        images, captions = pretraining_batch(rng, self.batch_size, stage.style_weights, stage.p_mention)
        return images_to_tensor(images), tokenizer()(captions)  # (B, 3, 32, 32) float, (B, 32) int64


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (image, caption) pairs; features L2-normalised, (B, D)."""
    logits = logit_scale * image_features @ text_features.T  # (B, B), pair i matches i
    targets = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def _optimizer(model: torch.nn.Module, weight_decay: float) -> torch.optim.AdamW:
    # As open_clip's training code: no decay on gains, biases and the logit scale.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.98), eps=1e-6)


def _save_state(
    state_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: dict[str, Any]
) -> None:
    """Write a resumable state; `progress.json` is replaced last, so a crash leaves the previous state usable."""
    state_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, state_dir / f"model-{step}.st")
    opt = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items() for k, v in s.items()}
    save_file(tensors, state_dir / f"optim-{step}.st")
    tmp = state_dir / "progress.json.tmp"
    tmp.write_text(json.dumps({**run, "step": step, "param_groups": opt["param_groups"]}, indent=1))
    tmp.replace(state_dir / "progress.json")
    for old in state_dir.glob("*.st"):
        if old.stem.split("-")[-1] != str(step):
            old.unlink()


def _load_state(state_dir: Path, run: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore the state in `state_dir` if there is one; returns the step to continue from."""
    progress_path = state_dir / "progress.json"
    if not progress_path.is_file():
        return 0
    progress = json.loads(progress_path.read_text())
    saved = {k: progress.get(k) for k in run}
    if saved != run:
        raise ValueError(
            f"Expected the run in {state_dir} to have the same settings, got a different recipe/seed/batch size "
            f"({progress_path}). Use a new --out directory, or delete {state_dir} to start over."
        )
    step = int(progress["step"])
    model.load_state_dict(load_file(str(state_dir / f"model-{step}.st")))
    tensors = load_file(str(state_dir / f"optim-{step}.st"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": progress["param_groups"]})
    logger.info("Resuming toy pretraining from step %d (%s)", step, state_dir)
    return step


def pretrain(
    out_dir: str | Path,
    stages: Sequence[Stage] = DEFAULT_RECIPE,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
    init_logit_scale: float = DEFAULT_INIT_LOGIT_SCALE,
    weight_decay: float = 0.1,
    log_every: int = 50,
    checkpoint_every: int = 200,
    num_workers: int = 1,
    eval_datasets: Iterable[str] = TOY_DATASETS,
) -> PretrainResult:
    """Pretrain the toy CLIP contrastively through `stages`, resuming from `out_dir/state` if present."""
    stages = tuple(stages)
    if not stages:
        fail("stages", "at least one Stage", stages)
    for value, name in ((batch_size, "batch_size"), (log_every, "log_every"), (checkpoint_every, "checkpoint_every")):
        check_positive_int(value, name)
    check_non_negative_int(num_workers, "num_workers")
    out_dir = Path(out_dir)
    total = sum(s.steps for s in stages)
    run = {
        "recipe": [s.to_json() for s in stages],
        "batch_size": batch_size,
        "seed": seed,
        "init_logit_scale": init_logit_scale,
        "weight_decay": weight_decay,
    }
    torch.manual_seed(seed)
    model = build_toy_clip(init_logit_scale).to(device).train()
    optimizer = _optimizer(model, weight_decay)
    start = _load_state(out_dir / "state", run, model, optimizer)
    schedule = [(s, i) for s in stages for i in range(s.steps)]
    loader = torch.utils.data.DataLoader(
        _Batches(stages, batch_size, seed),
        batch_size=None,
        sampler=range(start, total),
        num_workers=num_workers,
        prefetch_factor=2 if num_workers else None,
    )
    began, last_log = time.perf_counter(), time.perf_counter()
    for step, (images, tokens) in enumerate(loader, start=start):
        stage, stage_step = schedule[step]
        for group in optimizer.param_groups:
            group["lr"] = stage.lr_at(stage_step)
        image_features, text_features, logit_scale = model(images.to(device), tokens.to(device))
        loss = clip_loss(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        done = step + 1
        if done % log_every == 0 or done == total:
            rate = log_every / max(time.perf_counter() - last_log, 1e-9)
            last_log = time.perf_counter()
            logger.info(
                "step %d/%d [%s] loss %.4f lr %.2e logit scale %.1f (%.2f steps/s)",
                done, total, stage.name, loss.item(), stage.lr_at(stage_step), model.logit_scale.exp().item(), rate,
            )  # fmt: skip
        if done % checkpoint_every == 0 or done == total:
            _save_state(out_dir / "state", done, model, optimizer, run)
    seconds = time.perf_counter() - began
    model.eval()
    zero_shot = evaluate_zero_shot(model, eval_datasets, device=device)
    for name, metrics in zero_shot.items():
        accuracy, ece = 100 * metrics["accuracy"], 100 * metrics["ece"]
        logger.info("zero-shot %s: accuracy %.1f %%, ECE %.1f %%", name, accuracy, ece)
    meta = {
        **run,
        "steps": total,
        "train_seconds_this_session": round(seconds, 1),
        "steps_this_session": total - start,
        "device": device,
        "torch": torch.__version__,
        "logit_scale": model.logit_scale.exp().item(),
        "zero_shot_test": zero_shot,
    }
    checkpoint = save_toy_checkpoint(model.cpu(), out_dir / CHECKPOINT_NAME, meta)
    return PretrainResult(checkpoint=checkpoint, steps=total, seconds=seconds, zero_shot=zero_shot)
