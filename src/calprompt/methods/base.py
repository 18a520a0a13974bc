"""The one interface every prompt-tuning method implements, and the method registry.

A method is an ``nn.Module`` that holds its trainable prompt parameters and a reference to the frozen backbone. It
builds prompts for a class list (and can switch lists, base -> novel, without retraining), and returns logits
together with the tuned text and image features. Encoding, logits, freezing and checkpointing live here, once.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calprompt._validation import check_dataclass_keys, fail
from calprompt.clip.backbone import ClipBackbone


@dataclass(frozen=True)
class MethodConfig:
    """Base class of a method's settings: a small frozen dataclass, validated on creation, saved as JSON."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodConfig:
        check_dataclass_keys(cls, data, f"{cls.__name__} options")
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class MethodOutput:
    """What a forward pass returns: everything the objective and the calibrators may need."""

    logits: Tensor  # (B, C) scaled logits
    text_features: Tensor  # (C, D), or (B, C, D) when the prompts depend on the image; L2-normalised
    image_features: Tensor  # (B, D), L2-normalised


class PromptMethod(nn.Module, ABC):
    """Base class of prompt-tuning methods.

    Subclasses set ``config_type``, create parameters in :meth:`init_parameters`, build the class-list-dependent
    prompts in :meth:`build_prompts` and encode them in :meth:`encode_text`. A method that changes the image encoder
    overrides :meth:`encode_image` and sets
    ``image_encoder_untouched = False`` (its image features cannot then be cached).
    """

    name: ClassVar[str]
    config_type: ClassVar[type[MethodConfig]] = MethodConfig
    image_encoder_untouched: ClassVar[bool] = True
    text_depends_on_image: ClassVar[bool] = False

    def __init__(self, backbone: ClipBackbone, classnames: Sequence[str], config: MethodConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_type):
            fail("config", f"a {self.config_type.__name__}", type(config).__name__)
        self.backbone = backbone
        self.config = config
        self._classnames: tuple[str, ...] = ()
        self.init_parameters(tuple(classnames))
        self.set_classnames(classnames)

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        """Create the learnable parameters (called once, before the first :meth:`build_prompts`)."""

    # ----------------------------------------------------------------------------------------------------------------
    # Class lists
    @property
    def classnames(self) -> tuple[str, ...]:
        return self._classnames

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Rebuild the prompts for another class list (e.g. novel classes); learned parameters are kept."""
        names = tuple(classnames)
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            fail("classnames", "a non-empty list of non-empty strings", classnames)
        self._classnames = names
        self.build_prompts(names)

    @abstractmethod
    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        """Prepare everything that depends on the class list (token ids, frozen embeddings, teacher features)."""

    # ----------------------------------------------------------------------------------------------------------------
    # Encoding
    @abstractmethod
    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        """Class text features (C, D), or (B, C, D) for methods whose prompts depend on ``image_features``."""

    def encode_image(self, images: Tensor) -> Tensor:
        """Image features (B, D); the frozen encoder unless a method overrides it."""
        with torch.no_grad():
            return self.backbone.encode_image(images)

    def forward(self, images: Tensor | None = None, *, image_features: Tensor | None = None) -> MethodOutput:
        """Logits for images, or for precomputed (cached) frozen image features."""
        if (images is None) == (image_features is None):
            fail("images/image_features", "exactly one of the two", "both" if images is not None else "neither")
        if image_features is None:
            image_features = self.encode_image(images)
        elif not self.image_encoder_untouched:
            fail("image_features", f"None for {self.name} (it changes the image encoder, so pass images)", "a tensor")
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(self.encode_text(image_features), dim=-1)
        return MethodOutput(self.logits(image_features, text_features), text_features, image_features)

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """``exp(logit_scale) * cos(image, text)`` for normalised features; per-image text (B, C, D) supported."""
        scale = self.backbone.logit_scale
        if text_features.ndim == 3:
            return scale * torch.einsum("bd,bcd->bc", image_features, text_features.to(image_features.dtype))
        return scale * image_features @ text_features.to(image_features.dtype).t()

    def extra_losses(self, output: MethodOutput, labels: Tensor) -> dict[str, tuple[float, Tensor]]:
        """The method's own loss terms as ``name -> (weight, value)``, added to the calibration objective."""
        return {}

    # ----------------------------------------------------------------------------------------------------------------
    # Parameters and checkpoints
    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Only the learned prompt parameters (the frozen backbone is never saved with a run)."""
        return {name: p.detach().clone().contiguous() for name, p in self.trainable_parameters().items()}

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        params = self.trainable_parameters()
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            fail(
                "prompt weights",
                f"the parameters of {self.name} {sorted(params)}",
                f"missing {missing}, unexpected {unexpected}",
            )
        with torch.no_grad():
            for name, param in params.items():
                if state[name].shape != param.shape:
                    fail(f"prompt weight {name}", f"of shape {tuple(param.shape)}", tuple(state[name].shape))
                param.copy_(state[name].to(param.device, param.dtype))

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the method: name, settings and size."""
        return {
            "name": self.name,
            "config": self.config.to_dict(),
            "trainable_parameters": self.num_trainable_parameters(),
        }


# --------------------------------------------------------------------------------------------------------------------
# Registry
METHODS: dict[str, type[PromptMethod]] = {}

# Modules that define the built-in methods, imported explicitly on first use of the registry.
_BUILTIN_MODULES = ("calprompt.methods.zeroshot", "calprompt.methods.coop")
_loaded = False


def register_method(name: str) -> Callable[[type[PromptMethod]], type[PromptMethod]]:
    """Class decorator: register a method under ``name`` (duplicates raise)."""

    def decorator(cls: type[PromptMethod]) -> type[PromptMethod]:
        if name in METHODS:
            raise ValueError(f"A prompt method named {name!r} is already registered ({METHODS[name].__qualname__}).")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorator


def available_methods() -> list[str]:
    _load_builtins()
    return sorted(METHODS)


def get_method(name: str) -> type[PromptMethod]:
    _load_builtins()
    key = name.lower()
    if key not in METHODS:
        fail("method", f"one of {', '.join(sorted(METHODS))}", name)
    return METHODS[key]


def build_method(
    name: str,
    backbone: ClipBackbone,
    classnames: Sequence[str],
    *,
    template: str = "a photo of a {}.",
    **options: Any,
) -> PromptMethod:
    """Build a registered method; ``options`` are the fields of its config dataclass."""
    cls = get_method(name)
    config = cls.config_type.from_dict({**_template_option(cls, template), **options})
    return cls(backbone, classnames, config)


def _template_option(cls: type[PromptMethod], template: str) -> dict[str, str]:
    """Pass the dataset's zero-shot template to configs that declare a ``template`` field."""
    fields = {f.name for f in dataclasses.fields(cls.config_type)}
    return {"template": template} if "template" in fields else {}


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _loaded = True
