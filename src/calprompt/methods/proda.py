"""ProDA (Lu et al., Prompt Distribution Learning, CVPR 2022), as the DAC repository implements and configures it.

``P`` prompts of ``n_ctx`` learnable vectors each (32 x 16), with the class name at the front (the first quarter),
in the middle (the second quarter) or at the end (the rest). A class's text feature is a Gaussian over its prompts'
normalised features; classification uses its mean ``mu_c`` (not renormalised, so ``|mu_c| < 1`` weights the class).

Training, per step, on a batch of ``prompt_batch_size`` (4) of the prompts (a fresh random permutation of the
``P`` prompts every ``P / prompt_batch_size`` steps): with ``z = s f mu^T`` and the per-dimension covariance
``Sigma[d]`` (C x C) of the batch's class features (divided by batch + 1, as the code does), ``r[b,i,k] =
sum_d f[b,d]^2 Sigma[d,i,k]`` and ``sigma[b,c] = r[b,y,y] + r[b,c,c] - 2 r[b,y,c]``, the loss is
``CE(z + s^2 sigma / 2, y) + alpha * mean_{p != q} |cos(g_p, g_q)|``, where ``g_p`` is prompt p's feature without a
class name ("X .. X."). Here ``CE(z)`` is the objective's cross-entropy and the method adds the rest: since
``sigma[b,y] = 0``, ``CE(z + s^2 sigma / 2) - CE(z) = LSE(z + s^2 sigma / 2) - LSE(z)`` (``prompt_distribution``),
plus ``alpha *`` the orthogonality term (``prompt_orthogonality``). Calibration terms see ``z`` and the normalised
``mu``. Evaluation averages all ``P`` prompts.

Departure: the public code's permutation runs on across epochs; here it restarts each epoch and is drawn from the
method's seed and ``(epoch, cycle)`` (:meth:`on_step_start`), so a resumed run repeats it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calprompt._validation import check_non_negative, check_positive_int, fail
from calprompt.methods.base import MethodConfig, MethodLosses, MethodOutput, PromptMethod, register_method
from calprompt.methods.text_prompts import ClassPromptTokens, with_context_slots

_POSITIONS = ("front", "middle", "end")


@dataclass(frozen=True)
class ProDAConfig(MethodConfig):
    """ProDA's settings; defaults are the DAC repository's (train.py and the ViT-B/16 config)."""

    n_ctx: int = 16
    n_prompts: int = 32
    prompt_batch_size: int = 4
    alpha: float = 0.1  # weight of the orthogonality of the class-free prompt features
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("n_ctx", "n_prompts", "prompt_batch_size"):
            check_positive_int(getattr(self, name), name)
        check_non_negative(self.alpha, "alpha")
        check_non_negative(self.init_std, "init_std")
        if self.n_prompts % self.prompt_batch_size:
            fail("prompt_batch_size", f"a divisor of n_prompts={self.n_prompts}", self.prompt_batch_size)


def prompt_positions(n_prompts: int) -> list[str]:
    """Class-name position of each prompt: a quarter front, a quarter middle, the rest end (all end for one)."""
    if n_prompts == 1:
        return ["end"]
    quarter = n_prompts // 4
    return ["front"] * quarter + ["middle"] * quarter + ["end"] * (n_prompts - 2 * quarter)


@register_method("proda")
class ProDA(PromptMethod):
    config_type = ProDAConfig

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        config, width = self.config, self.backbone.text_width
        ctx = torch.randn(config.n_prompts, config.n_ctx, width) * config.init_std  # (P, n_ctx, D)
        self.ctx = nn.Parameter(ctx.to(self.backbone.device))
        self.positions = prompt_positions(config.n_prompts)
        self.tokens = nn.ModuleDict({p: ClassPromptTokens(config.n_ctx, p) for p in _POSITIONS})  # type: ignore[arg-type]
        self._build_class_free()
        # The seed of the prompt batches; drawn from the (run-seeded) global generator, like the context.
        self.sampling_seed = int(torch.randint(0, 2**62, ()))
        self._active: Tensor | None = None  # indices of this step's prompt batch (training only)
        self._prompt_features: Tensor | None = None  # (C, K, E) of the last encode_text
        self._step_features: Tensor | None = None  # (C, K, E) of the last forward pass
        self._class_norms: Tensor | None = None  # (C,) |mu_c| of the last encode_text (with its gradient)

    def _build_class_free(self) -> None:
        """Frozen pieces of the class-free prompt ``X .. X.`` (its context replaced by each prompt's)."""
        n_ctx, start = self.config.n_ctx, self.backbone.text_start
        ids = with_context_slots(self.backbone, ["."], n_ctx)
        ids = ids[:, : int(self.backbone.eot_positions(ids).max()) + 1]  # (1, L)
        with torch.no_grad():
            embeddings = self.backbone.embed_tokens(ids).float()
        self.register_buffer("free_ids", ids, persistent=False)
        self.register_buffer("free_prefix", embeddings[:, :start].clone(), persistent=False)  # [SOS]
        self.register_buffer("free_suffix", embeddings[:, start + n_ctx :].clone(), persistent=False)  # "." [EOS]

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        for tokens in self.tokens.values():
            tokens.build(self.backbone, classnames)

    # ----------------------------------------------------------------------------------------------------------------
    def on_step_start(self, epoch: int, step: int) -> None:
        """Choose this step's prompt batch: step ``step`` of cycle ``step // (P / K)`` of a permutation per cycle."""
        config = self.config
        per_cycle = config.n_prompts // config.prompt_batch_size
        cycle, index = divmod(step, per_cycle)
        generator = torch.Generator().manual_seed(hash((self.sampling_seed, epoch, cycle)) & (2**62 - 1))
        order = torch.randperm(config.n_prompts, generator=generator)
        self._active = order[index * config.prompt_batch_size : (index + 1) * config.prompt_batch_size]

    def _prompt_indices(self) -> list[int]:
        if self.training and self._active is not None:
            return self._active.tolist()
        return list(range(self.config.n_prompts))

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        """Mean (C, E) of the normalised features of the active prompts (all of them outside training)."""
        indices = self._prompt_indices()
        features: list[Tensor | None] = [None] * len(indices)
        for position, tokens in self.tokens.items():  # one text-encoder pass per class-name position
            group = [i for i, p in enumerate(indices) if self.positions[p] == position]
            if not group:
                continue
            prompts = torch.stack([tokens.assemble(self.ctx[indices[i]]) for i in group])  # (G, C, L, D)
            rows = prompts.flatten(0, 1).to(self.backbone.dtype)  # (G * C, L, D)
            ids = tokens.ids.repeat(len(group), 1)  # (G * C, L)
            encoded = self.backbone.encode_text_embeddings(rows, ids).view(
                len(group), prompts.shape[1], -1
            )  # (G, C, E)
            for j, i in enumerate(group):
                features[i] = encoded[j]
        stacked = F.normalize(torch.stack(features, dim=1).float(), dim=-1)  # (C, K, E)
        self._prompt_features = stacked
        mean = stacked.mean(dim=1)  # (C, E)
        self._class_norms = mean.norm(dim=-1)
        return mean

    def forward(self, images: Tensor | None = None, *, image_features: Tensor | None = None) -> MethodOutput:
        output = super().forward(images, image_features=image_features)
        self._step_features = self._prompt_features  # this class list's (DOR may encode outlier names next)
        return output

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """``s f mu_c^T``: the normalised mean times its norm (the last :meth:`encode_text`'s)."""
        if self._class_norms is None or self._class_norms.shape[0] != text_features.shape[-2]:
            fail("ProDA's class norms", "set by encode_text for these class features", None)
        return super().logits(image_features, text_features) * self._class_norms.to(image_features.dtype)

    # ----------------------------------------------------------------------------------------------------------------
    @property
    def needs(self) -> frozenset[str]:
        return frozenset({"image_features"})

    def losses(self, inputs: Mapping[str, Any]) -> MethodLosses:
        if self._step_features is None:
            fail("ProDA's prompt features", "encoded by the forward pass of this step", None)
        scale = self.backbone.logit_scale
        gap = prompt_distribution(
            inputs["logits"], inputs["image_features"], self._step_features, inputs["labels"], scale
        )
        ortho = prompt_orthogonality(self._class_free_features())
        return {"prompt_distribution": (1.0, gap), "prompt_orthogonality": (self.config.alpha, ortho)}

    def _class_free_features(self) -> Tensor:
        """Normalised features (P, E) of every prompt's context alone: ``[SOS] ctx_1..ctx_n . [EOS]``."""
        count = self.config.n_prompts
        embeddings = torch.cat(
            [
                self.free_prefix.expand(count, -1, -1),
                self.ctx.to(self.free_prefix.dtype),
                self.free_suffix.expand(count, -1, -1),
            ],
            dim=1,
        )  # (P, L, D)
        encoded = self.backbone.encode_text_embeddings(
            embeddings.to(self.backbone.dtype), self.free_ids.expand(count, -1)
        )
        return F.normalize(encoded.float(), dim=-1)


def prompt_distribution(
    logits: Tensor, image_features: Tensor, prompt_features: Tensor, labels: Tensor, scale: Tensor | float
) -> Tensor:
    """``mean_b LSE(z + s^2 sigma / 2) - LSE(z)``: ProDA's upper bound minus the cross-entropy of the mean logits.

    ``logits`` z (B, C) = s f mu^T, ``image_features`` f (B, E) normalised, ``prompt_features`` (C, K, E) normalised.
    """
    k = prompt_features.shape[1]
    centred = prompt_features - prompt_features.mean(dim=1, keepdim=True)  # (C, K, E)
    covariance = torch.einsum("ike,jke->eij", centred, centred) / (k + 1)  # (E, C, C)
    r = torch.einsum("be,eij->bij", image_features.square(), covariance)  # (B, C, C)
    batch = torch.arange(logits.shape[0], device=logits.device)
    r_yy = r[batch, labels, labels].unsqueeze(-1)  # (B, 1)
    r_cc = torch.diagonal(r, dim1=1, dim2=2)  # (B, C)
    sigma = r_yy + r_cc - 2 * r[batch, labels, :]  # (B, C)
    refined = logits + 0.5 * scale**2 * sigma
    return (torch.logsumexp(refined, dim=-1) - torch.logsumexp(logits, dim=-1)).mean()


def prompt_orthogonality(features: Tensor) -> Tensor:
    """``mean_{p != q} |g_p . g_q|`` over normalised prompt features (P, E)."""
    gram = features @ features.t()
    off_diagonal = ~torch.eye(features.shape[0], dtype=torch.bool, device=features.device)
    return gram[off_diagonal].abs().mean()
