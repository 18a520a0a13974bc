"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus an image-conditioned shift from a small meta-network.

Meta-net: Linear(d -> d/16) -> ReLU -> Linear(d/16 -> ctx_dim) on the L2-normalised image feature; its output is
added to every context vector, so each image gets its own prompts and the text pass covers B x C prompts (encoded as
one batched pass, in chunks of ``text_chunk_rows`` rows). Text moment matching is then applied per image and averaged
(the calibration term handles (B, C, D) text features).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from calprompt._validation import check_non_negative, check_positive_int, fail
from calprompt.methods.base import MethodConfig, PromptMethod, register_method
from calprompt.methods.text_prompts import ClassPromptTokens, encode_prompt_rows, initial_context


@dataclass(frozen=True)
class CoCoOpConfig(MethodConfig):
    """CoCoOp's settings; defaults are the paper's ViT-B/16 base-to-novel recipe."""

    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"  # None: N(0, init_std) vectors
    init_std: float = 0.02
    text_chunk_rows: int = 4096  # prompt rows per text-encoder call (memory bound of the B x C pass)

    def __post_init__(self) -> None:
        check_positive_int(self.n_ctx, "n_ctx")
        check_positive_int(self.text_chunk_rows, "text_chunk_rows")
        check_non_negative(self.init_std, "init_std")
        if self.ctx_init is not None and not self.ctx_init.strip():
            fail("ctx_init", "a phrase or None", self.ctx_init)


@register_method("cocoop")
class CoCoOp(PromptMethod):
    """``[SOS] (ctx + meta_net(f)) {class}. [EOS]`` per image feature ``f``."""

    config_type = CoCoOpConfig

    @property
    def text_depends_on_image(self) -> bool:
        return True

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        backbone, config = self.backbone, self.config
        context = initial_context(backbone, config.n_ctx, config.ctx_init, config.init_std)
        self.ctx = nn.Parameter(context.to(backbone.device))
        hidden = max(backbone.embed_dim // 16, 1)
        self.meta_net = nn.Sequential(
            nn.Linear(backbone.embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, backbone.text_width)
        ).to(backbone.device)
        self.prompts = ClassPromptTokens(config.n_ctx)

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        self.prompts.build(self.backbone, classnames)

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        if image_features is None:
            fail("image_features", "given (CoCoOp's prompts depend on the image)", None)
        shift = self.meta_net(image_features.to(self.ctx.dtype))  # (B, D_text)
        context = self.ctx.unsqueeze(0) + shift.unsqueeze(1)  # (B, n_ctx, D_text)
        embeddings = self.prompts.assemble_per_image(context).to(self.backbone.dtype)  # (B, C, L, D_text)
        batch, num_classes, length, width = embeddings.shape
        rows = embeddings.reshape(batch * num_classes, length, width)  # (B*C, L, D_text)
        ids = self.prompts.ids.repeat(batch, 1)  # (B*C, L), class-major within each image
        features = encode_prompt_rows(self.backbone, rows, ids, chunk_rows=self.config.text_chunk_rows)
        return features.reshape(batch, num_classes, -1)  # (B, C, E)
