"""PromptSRC (Khattak et al., Self-regulating Prompts, ICCV 2023): IVLP prompts kept close to frozen CLIP by three
self-consistency terms, and a Gaussian-weighted average of the prompts of all epochs (GPA) as the final prompts.

Loss (the public code's form): ``CE + 25 * L1(t, t_bar) + 10 * L1(f, f_zs) + KL(p_zs || p) / (B * C)``, where ``t``
are the tuned class text features, ``t_bar`` frozen CLIP's over an ensemble of 60 ImageNet templates (the normalised
mean of the raw features; once per class list), ``f`` / ``f_zs`` the tuned / frozen image features of the same
augmented batch, and ``p_zs`` frozen CLIP's predictions with ``t_bar`` as classifier. The ``1 / (B * C)`` is the
code's ``reduction="sum"`` divided by ``logits.numel()``.

GPA: after epoch ``e`` (1-based) the prompts are added to a running sum with weight ``w_e`` proportional to the normal
density ``N(e; mu, sigma)`` over ``e = 1..E``; the sum is what is evaluated and saved. The paper uses mu 15, sigma 1
for E = 20; the default ``gpa_mean=None`` is ``0.75 * E`` (15 of 20), so shorter schedules keep the same relative
position of the peak, and sigma stays one epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from calprompt._validation import check_non_negative, fail
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.conventions import check_template
from calprompt.methods.base import MethodLosses, register_method
from calprompt.methods.imagenet_templates import IMAGENET_TEMPLATES_60
from calprompt.methods.ivlp import IVLP, IVLPConfig

GPA_MEAN_FRACTION = 0.75  # mu = 15 of E = 20 epochs in the paper


@dataclass(frozen=True)
class PromptSRCConfig(IVLPConfig):
    """PromptSRC's settings; defaults are the paper's ViT-B/16 recipe (4 + 4 tokens, depth 9)."""

    n_ctx_text: int = 4
    n_ctx_vision: int = 4
    text_weight: float = 25.0
    image_weight: float = 10.0
    logit_weight: float = 1.0
    gpa_mean: float | None = None  # None: 0.75 * epochs (the paper's 15 of 20)
    gpa_std: float = 1.0
    teacher_templates: tuple[str, ...] = IMAGENET_TEMPLATES_60

    paper_depth = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("text_weight", "image_weight", "logit_weight"):
            check_non_negative(getattr(self, name), name)
        if self.gpa_mean is not None and not math.isfinite(self.gpa_mean):
            fail("gpa_mean", "a finite number of epochs or None (0.75 * epochs)", self.gpa_mean)
        if not self.gpa_std > 0:
            fail("gpa_std", "a positive number of epochs", self.gpa_std)
        if not self.teacher_templates:
            fail("teacher_templates", "a non-empty list of templates", self.teacher_templates)
        for template in self.teacher_templates:
            check_template(template, "teacher_templates")


def gpa_weights(epochs: int, mean: float | None, std: float) -> Tensor:
    """Weights (E,) float64 of epochs 1..E: the normal density at each epoch, normalised to sum to 1."""
    mu = GPA_MEAN_FRACTION * epochs if mean is None else mean
    x = torch.arange(1, epochs + 1, dtype=torch.float64)
    density = torch.exp(-0.5 * ((x - mu) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    total = density.sum()
    if not total > 0:
        fail("gpa_mean/gpa_std", f"a Gaussian with weight on epochs 1..{epochs}", (mean, std))
    return density / total


@register_method("promptsrc")
class PromptSRC(IVLP):
    """IVLP 4 + 4 (depth 9) with self-regularisation and Gaussian prompt aggregation."""

    config_type = PromptSRCConfig

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        super().init_parameters(classnames)
        self._aggregate: dict[str, Tensor] = {}  # name -> float64 running sum of w_e * theta_e
        self._epochs_aggregated = 0

    @property
    def needs(self) -> frozenset[str]:
        return frozenset({"text_features", "image_features", "zs_image_features"})

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        super().build_prompts(classnames)
        teacher = zero_shot_text_features(
            self.backbone, classnames, self.config.teacher_templates, normalize_each=False
        )
        self.register_buffer("teacher_text_features", teacher, persistent=False)  # (C, E), normalised

    def losses(self, inputs: Mapping[str, Any]) -> MethodLosses:
        teacher = self.teacher_text_features.float()
        logits = inputs["logits"]  # (B, C)
        zs_logits = self.backbone.logit_scale * inputs["zs_image_features"] @ teacher.t()  # (B, C)
        kl = F.kl_div(logits.log_softmax(-1), zs_logits.log_softmax(-1), reduction="sum", log_target=True)
        image_l1 = F.l1_loss(inputs["image_features"], inputs["zs_image_features"])
        return {
            "src_text_l1": (self.config.text_weight, F.l1_loss(inputs["text_features"], teacher)),
            "src_image_l1": (self.config.image_weight, image_l1),
            "src_logit_kl": (self.config.logit_weight, kl / logits.numel()),
        }

    # ----------------------------------------------------------------------------------------------------------------
    # Gaussian prompt aggregation
    def on_epoch_end(self, epoch: int, epochs: int) -> None:
        if epoch == 0:
            self._aggregate, self._epochs_aggregated = {}, 0
        if epoch != self._epochs_aggregated:
            fail("GPA epoch", f"epoch {self._epochs_aggregated + 1} next", epoch + 1)
        weight = float(gpa_weights(epochs, self.config.gpa_mean, self.config.gpa_std)[epoch])
        for name, param in self.trainable_parameters().items():
            term = weight * param.detach().double()
            self._aggregate[name] = term if name not in self._aggregate else self._aggregate[name] + term
        self._epochs_aggregated = epoch + 1

    def on_fit_end(self) -> None:
        """Evaluate (and save) the aggregate: load it into the prompt parameters."""
        if self._aggregate:
            with torch.no_grad():
                for name, param in self.trainable_parameters().items():
                    param.copy_(self._aggregate[name].to(param.dtype))

    def extra_state(self) -> dict[str, Tensor]:
        state = {f"gpa.{name}": value for name, value in self._aggregate.items()}
        return {**state, "gpa_epochs": torch.tensor(self._epochs_aggregated, dtype=torch.int64)}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        names = set(self.trainable_parameters())
        epochs = int(state["gpa_epochs"]) if "gpa_epochs" in state else -1
        sums = {key.removeprefix("gpa."): value for key, value in state.items() if key != "gpa_epochs"}
        if epochs < 0 or set(sums) != (names if epochs > 0 else set()):
            fail("PromptSRC state", f"gpa_epochs and the GPA sums of {sorted(names)}", sorted(state))
        self._aggregate = {name: value.to(self.backbone.device, torch.float64) for name, value in sums.items()}
        self._epochs_aggregated = epochs
