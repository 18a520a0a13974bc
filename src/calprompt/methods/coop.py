"""CoOp (Zhou et al., IJCV 2022): learnable context vectors shared by all classes (or one set per class)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from calprompt._validation import check_non_negative, check_positive_int, fail
from calprompt.clip.backbone import ClipBackbone
from calprompt.methods.base import MethodConfig, PromptMethod, register_method
from calprompt.methods.text_prompts import CLASS_TOKEN_POSITIONS, ClassPromptTokens, initial_context


@dataclass(frozen=True)
class CoOpConfig(MethodConfig):
    """CoOp's settings; defaults are the paper's ViT-B/16 base-to-novel recipe."""

    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"  # None: random N(0, init_std) vectors with "X X X X" placeholders
    class_token_position: str = "end"  # "end", "middle" or "front"
    class_specific_context: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_positive_int(self.n_ctx, "n_ctx")
        check_non_negative(self.init_std, "init_std")
        if self.class_token_position not in CLASS_TOKEN_POSITIONS:
            fail("class_token_position", f"one of {CLASS_TOKEN_POSITIONS}", self.class_token_position)
        if self.ctx_init is not None and not self.ctx_init.strip():
            fail("ctx_init", "a phrase or None", self.ctx_init)


@register_method("coop")
class CoOp(PromptMethod):
    """``[SOS] ctx_1 .. ctx_n {class}. [EOS]`` with learnable ``ctx``; loss and logits are the shared ones."""

    config_type = CoOpConfig

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        context = self._initial_context(self.backbone, self.config)
        if self.config.class_specific_context:
            context = context.unsqueeze(0).repeat(len(classnames), 1, 1)  # (C, n_ctx, D)
        self.ctx = nn.Parameter(context.to(self.backbone.device))
        self.prompts = ClassPromptTokens(self.config.n_ctx, self.config.class_token_position)

    @staticmethod
    def _initial_context(backbone: ClipBackbone, config: CoOpConfig) -> Tensor:
        """From the phrase's token embeddings, or N(0, init_std) drawn from the (run-seeded) global generator."""
        return initial_context(backbone, config.n_ctx, config.ctx_init, config.init_std)

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        if self.config.class_specific_context and len(classnames) != self.ctx.shape[0]:
            fail(
                "classnames",
                f"{self.ctx.shape[0]} classes (class-specific context cannot move to new classes)",
                len(classnames),
            )
        self.prompts.build(self.backbone, classnames)

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        embeddings = self.prompts.assemble(self.ctx).to(self.backbone.dtype)  # (C, L, D)
        return self.backbone.encode_text_embeddings(embeddings, self.prompts.ids)
