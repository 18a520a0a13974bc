"""Test-time prompt tuning of many images at once: one context copy per image, optimised together.

Each test image's problem is independent (TPT resets the prompt before every image), so a batch of B images is
tuned as one (B, n_ctx, D) context parameter, image ``b`` owning row ``b``:

- the loss is the *sum* of the images' losses, so row ``b``'s gradient is exactly image ``b``'s;
- AdamW and SGD are element-wise (their moments, weight decay and step count act on each entry alone), so one
  optimizer over the (B, n_ctx, D) parameter is B independent per-image optimizers;
- each image's views are encoded once by the frozen image encoder, and view 0 (the test view) serves the final
  prediction as well (the public code encodes it again);
- the B x C prompts go through the text-pass planner of the backbone (truncation, length groups, each image's
  [SOS] + context computed once for its C prompts), in chunks of rows under the backbone's text memory budget;
- the confident views are selected once, at the first step, from the initial prompt's logits (the same for every
  image: its text features are encoded once per class list), and kept for the later steps as TPT keeps them.

The loss of each image is a `CalibrationObjective` whose base term is TPT's entropy of the confident views'
averaged probability (`calprompt.calibration.test_time`), plus label-free regularizers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calprompt._validation import check_choice, check_non_negative, check_non_negative_int, fail
from calprompt.calibration.objective import CalibrationObjective
from calprompt.calibration.terms import TextMoments
from calprompt.calibration.test_time import confident_count, confident_views
from calprompt.engine.precision import autocast
from calprompt.methods.base import PromptMethod
from calprompt.methods.text_prompts import ClassPromptTokens, encode_prompt_rows

OPTIMIZERS = ("adamw", "sgd")
#: Prompt rows per text-encoder call (each call's activations are bounded again by the backbone's memory budget).
TEXT_CHUNK_ROWS = 4096
#: torch.optim.AdamW's default weight decay, which the public TPT code uses.
ADAMW_WEIGHT_DECAY = 0.01


@dataclass(frozen=True)
class TestTimeSettings:
    """TPT's settings (defaults: the public code's): views per image (the test view included), the fraction of
    views kept as confident, optimisation steps, learning rate and optimizer."""

    views: int = 64
    confident_fraction: float = 0.1
    steps: int = 1
    lr: float = 5e-3
    optimizer: str = "adamw"

    __test__ = False  # not a pytest test class

    def __post_init__(self) -> None:
        if isinstance(self.views, bool) or not isinstance(self.views, int) or self.views < 1:
            fail("tta_views", "an integer >= 1 (views per test image, the test view included)", self.views)
        fraction = self.confident_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
            fail("tta_confident", "a fraction in (0, 1] of the views kept as confident (TPT: 0.1)", fraction)
        check_non_negative_int(self.steps, "tta_steps")
        check_non_negative(self.lr, "tta_lr")
        check_choice(self.optimizer, "tta_optimizer", OPTIMIZERS)
        confident_count(self.views, fraction)  # refuses a fraction that keeps no view


def check_tunable(method: PromptMethod) -> ClassPromptTokens:
    """The prompt tokens of a method whose only learned parameter is one shared context (n_ctx, D) before the class
    name (CoOp-style); any other method is refused naming why."""
    if method.text_depends_on_image:
        fail(
            "method",
            "a prompt learner with one context shared by the classes for test-time tuning (CoCoOp's prompts depend "
            "on the image through its meta-network; tune CoOp, or CoOp initialised from a trained run, --init-run)",
            method.name,
        )
    params = method.trainable_parameters()
    prompts = getattr(method, "prompts", None)
    ctx = params.get("ctx")
    if set(params) != {"ctx"} or ctx is None or ctx.ndim != 2 or not isinstance(prompts, ClassPromptTokens):
        shapes = {name: tuple(p.shape) for name, p in params.items()}
        fail(
            "method",
            "a CoOp-style prompt learner whose only parameter is a context `ctx` of shape (n_ctx, D) shared by the "
            "classes (coop, kgcoop, prograd; not class-specific context)",
            f"{method.name} with parameters {shapes}",
        )
    if prompts.position != "end":
        fail("method option class_token_position", "'end' for test-time tuning", prompts.position)
    return prompts


@dataclass
class TunedBatch:
    """Per-image results: ``logits`` (B, C) of the test view after tuning and ``init_logits`` (B, C) before."""

    logits: Tensor
    init_logits: Tensor


class BatchedTestTimeTuner:
    """Tunes one context copy per image of a batch, starting from ``method``'s context (see the module docstring)."""

    def __init__(
        self,
        method: PromptMethod,
        objective: CalibrationObjective,
        settings: TestTimeSettings,
        *,
        zs_text_moments: TextMoments | None = None,
        precision: str = "fp32",
    ) -> None:
        self.prompts = check_tunable(method)
        self.method = method
        self.backbone = method.backbone
        self.objective = objective
        self.settings = settings
        self.zs_text_moments = zs_text_moments
        self.precision = precision
        self.initial = method.ctx.detach().clone()  # (n_ctx, D)
        with torch.no_grad(), autocast(str(self.backbone.device), precision):
            self.initial_text = F.normalize(method.encode_text().float(), dim=-1)  # (C, E), once per class list

    def encode(self, context: Tensor) -> Tensor:
        """L2-normalised text features (B, C, E) of per-image context (B, n_ctx, D)."""
        embeddings = self.prompts.assemble_per_image(context).to(self.backbone.dtype)  # (B, C, L, D)
        batch, classes, length, width = embeddings.shape
        rows = embeddings.reshape(batch * classes, length, width)  # (B*C, L, D), image-major
        ids = self.prompts.ids.repeat(batch, 1)  # (B*C, L)
        features = encode_prompt_rows(self.backbone, rows, ids, chunk_rows=TEXT_CHUNK_ROWS)
        return F.normalize(features.float(), dim=-1).reshape(batch, classes, -1)  # (B, C, E)

    def tune(self, view_features: Tensor) -> TunedBatch:
        """Tune on the L2-normalised frozen features (B, N, E) of each image's views (view 0: the test view)."""
        if view_features.ndim != 3 or view_features.shape[1] != self.settings.views:
            fail("view_features", f"a (B, {self.settings.views}, E) tensor", tuple(view_features.shape))
        scale = self.backbone.logit_scale
        views = view_features.float()
        init_all = scale * views @ self.initial_text.t()  # (B, N, C)
        init_logits = init_all[:, 0]
        if self.settings.steps == 0:
            return TunedBatch(init_logits.detach().cpu(), init_logits.detach().cpu())
        kept = confident_views(init_all, self.settings.confident_fraction)  # (B, K)
        batch = views.shape[0]
        context = nn.Parameter(self.initial.unsqueeze(0).repeat(batch, 1, 1))  # (B, n_ctx, D): a copy per image
        optimizer = self._optimizer(context)
        confident = torch.gather(views, 1, kept.unsqueeze(-1).expand(-1, -1, views.shape[-1]))  # (B, K, E)
        device = str(self.backbone.device)
        for _ in range(self.settings.steps):
            with autocast(device, self.precision):
                text = self.encode(context)  # (B, C, E)
            logits = scale * torch.einsum("bke,bce->bkc", confident, text)  # (B, K, C)
            loss = sum(self._image_loss(logits[b], text[b]) for b in range(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad(), autocast(device, self.precision):
            text = self.encode(context)
        logits = scale * torch.einsum("be,bce->bc", views[:, 0], text.float())
        return TunedBatch(logits.detach().cpu(), init_logits.detach().cpu())

    def _image_loss(self, logits: Tensor, text: Tensor) -> Tensor:
        """One image's objective: TPT's entropy of its (K, C) confident logits plus the label-free regularizers."""
        inputs = {"logits": logits, "text_features": text, "zs_text_moments": self.zs_text_moments}
        loss, _ = self.objective.components(**{name: inputs[name] for name in self.objective.needs})
        return loss

    def _optimizer(self, context: nn.Parameter) -> torch.optim.Optimizer:
        # foreach=False: the same element-wise arithmetic whatever the batch (the one-image loop's path).
        if self.settings.optimizer == "adamw":
            return torch.optim.AdamW(
                [context], lr=self.settings.lr, weight_decay=ADAMW_WEIGHT_DECAY, foreach=False, fused=False
            )
        return torch.optim.SGD([context], lr=self.settings.lr, foreach=False)
