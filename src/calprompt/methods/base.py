"""The one interface every prompt-tuning method implements, and the method registry.

A method is an ``nn.Module`` that holds its trainable prompt parameters and a reference to the frozen backbone. It
builds prompts for a class list (and can switch lists, base -> novel, without retraining), and returns logits
together with the tuned text and image features. Encoding, logits, freezing and checkpointing live here, once.

What a method may add, and the training loop (`calprompt.engine.train`) honours without knowing its name:

- its own loss terms (:meth:`PromptMethod.losses`) over named inputs it declares in :attr:`PromptMethod.needs`, in
  the vocabulary of the calibration terms (`calprompt.calibration.INPUT_NAMES`: frozen zero-shot text features and
  logits, frozen image features of the batch, ...). The loop computes each input once per step for the method and
  the objective together, and each frozen teacher once per class list;
- its own update rule (:meth:`PromptMethod.backward`; ProGrad projects gradients);
- state beyond its parameters (:meth:`PromptMethod.extra_state`; PromptSRC's running prompt average), updated by
  :meth:`PromptMethod.on_epoch_end`, saved in every checkpoint and restored on resume, so resume stays exact;
- whether it changes the image encoder or conditions its prompts on the image, as properties of the instance (they
  may follow the method's config);
- a head on frozen image features (:meth:`PromptMethod.adapt_image_features`; CLIP-Adapter's residual MLP), which
  keeps the frozen features cacheable;
- whether it learns one weight per class (:attr:`PromptMethod.class_specific`: ZS-LP, TaskRes, CLAP): such a method
  cannot name a class it was not trained on, so it refuses another class list, and runs refuse protocols that
  evaluate unseen classes (`calprompt.experiments.protocols.check_method_fits`).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calprompt._validation import check_dataclass_keys, fail, fail_unknown
from calprompt.clip.backbone import ClipBackbone
from calprompt.clip.families import FamilyLimitError


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
    # (B, D) frozen CLIP's image features, L2-normalised, when the forward pass had them (image encoder untouched);
    # they differ from ``image_features`` only for a method with a head on frozen features (CLIP-Adapter).
    frozen_image_features: Tensor | None = None


#: A method's own loss terms: name -> (weight, 0-dim value). Weight 0 logs a term without adding it to the loss
#: (a term that only steers a custom update rule, like ProGrad's KL).
MethodLosses = dict[str, tuple[float, Tensor]]


class PromptMethod(nn.Module, ABC):
    """Base class of prompt-tuning methods.

    Subclasses set ``config_type``, create parameters in :meth:`init_parameters`, build the class-list-dependent
    prompts in :meth:`build_prompts` and encode them in :meth:`encode_text`. A method that changes the image encoder
    overrides :meth:`encode_image` and :attr:`image_encoder_untouched` (its image features cannot then be cached).
    """

    name: ClassVar[str]
    config_type: ClassVar[type[MethodConfig]] = MethodConfig
    #: Whether the method learns one weight per class (a linear probe, a class residual): it cannot name a class it
    #: was not trained on, so :meth:`set_classnames` refuses any other class list.
    class_specific: ClassVar[bool] = False
    #: Why a class-specific method cannot name other classes (completes "<method> ... and cannot name classes it
    #: was not tuned on" in errors, sweep notes and the reports' n/a notes).
    class_specific_reason: ClassVar[str] = "learns one weight per class"

    def __init__(self, backbone: ClipBackbone, classnames: Sequence[str], config: MethodConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_type):
            fail("config", f"a {self.config_type.__name__}", type(config).__name__)
        self.backbone = backbone
        self.config = config
        self._classnames: tuple[str, ...] = ()
        try:
            self.init_parameters(tuple(classnames))
            self.set_classnames(classnames)
        except FamilyLimitError as error:  # one line naming the method and the family
            raise ValueError(
                f"Method '{self.name}' cannot run on backbone '{backbone.name}': {error}. Use a method without "
                "that need (e.g. coop, kgcoop, zeroshot) or a backbone of another family."
            ) from None

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        """Create the learnable parameters (called once, before the first :meth:`build_prompts`)."""

    # ----------------------------------------------------------------------------------------------------------------
    # What the method declares
    @property
    def image_encoder_untouched(self) -> bool:
        """Whether image features are frozen CLIP's (then they can be cached and shared across runs)."""
        return True

    @property
    def text_depends_on_image(self) -> bool:
        """Whether :meth:`encode_text` needs the batch's image features (per-image prompts, (B, C, D) features)."""
        return False

    @property
    def needs(self) -> frozenset[str]:
        """The inputs (names from `calprompt.calibration.INPUT_NAMES`) that :meth:`losses` reads."""
        return frozenset()

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
        if self.class_specific and self._classnames and names != self._classnames:
            fail(
                f"classnames of {self.name}",
                f"the {len(self._classnames)} classes it was trained on (it {self.class_specific_reason} and "
                "cannot name others: run it under protocol: all, with transfer targets of the same class list)",
                f"{len(names)} classes starting {list(names[:3])}",
            )
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

    def encode_text_for(self, classnames: Sequence[str]) -> Tensor:
        """Text features (K, D) of other class names under the current prompts, with gradients, then back to the
        current class list (DOR pulls the tuned features of sampled outlier names towards frozen CLIP's)."""
        if self.text_depends_on_image or self.class_specific:
            fail(
                f"{self.name} for outlier class names",
                "a method whose prompts do not depend on the image and that can name other classes",
                self.name,
            )
        current = self._classnames
        self.set_classnames(classnames)
        try:
            return self.encode_text()
        finally:
            self.set_classnames(current)

    def encode_image(self, images: Tensor) -> Tensor:
        """Image features (B, D); the frozen encoder unless a method overrides it."""
        with torch.no_grad():
            return self.backbone.encode_image(images)

    def adapt_image_features(self, image_features: Tensor) -> Tensor:
        """A head on the L2-normalised image features (B, D) before the logits; the identity unless a method learns
        one on frozen features (CLIP-Adapter). :meth:`image_head` normalises its result."""
        return image_features

    def image_head(self, image_features: Tensor) -> Tensor:
        """L2-normalised features (B, D) after :meth:`adapt_image_features` (the identity keeps them bit for bit)."""
        adapted = self.adapt_image_features(image_features)
        return image_features if adapted is image_features else F.normalize(adapted, dim=-1)

    def forward(self, images: Tensor | None = None, *, image_features: Tensor | None = None) -> MethodOutput:
        """Logits for images, or for precomputed (cached) frozen image features."""
        if (images is None) == (image_features is None):
            fail("images/image_features", "exactly one of the two", "both" if images is not None else "neither")
        if image_features is None:
            image_features = self.encode_image(images)
        elif not self.image_encoder_untouched:
            fail("image_features", f"None for {self.name} (it changes the image encoder, so pass images)", "a tensor")
        encoded = F.normalize(image_features, dim=-1)
        image_features = self.image_head(encoded)
        text_features = F.normalize(self.encode_text(image_features), dim=-1)
        frozen = encoded if self.image_encoder_untouched else None
        return MethodOutput(self.logits(image_features, text_features), text_features, image_features, frozen)

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """``exp(logit_scale) * cos(image, text)`` for normalised features; per-image text (B, C, D) supported."""
        scale = self.backbone.logit_scale
        if text_features.ndim == 3:
            return scale * torch.einsum("bd,bcd->bc", image_features, text_features.to(image_features.dtype))
        return scale * image_features @ text_features.to(image_features.dtype).t()

    # ----------------------------------------------------------------------------------------------------------------
    # Training hooks (the loop calls them; defaults: plain prompt tuning)
    def losses(self, inputs: Mapping[str, Any]) -> MethodLosses:
        """The method's own loss terms, added to the calibration objective with their weights.

        ``inputs`` holds at least the names in :attr:`needs`, in float32, and the loop calls this with autocast
        disabled (like the calibration terms).
        """
        return {}

    def backward(self, loss: Tensor, terms: MethodLosses, scale: Callable[[Tensor], Tensor]) -> None:
        """Accumulate this step's gradients into ``.grad`` of the trainable parameters (the loop then steps).

        ``loss`` is the calibration objective, ``terms`` the output of :meth:`losses`, ``scale`` what the loop applies
        to a loss before differentiating it (gradient accumulation, fp16 loss scaling). Default: backpropagate
        ``loss + sum(weight * term)``.
        """
        scale(total_loss(loss, terms)).backward()

    def on_fit_start(self, frozen_features: Callable[[], Tensor], labels: Tensor) -> None:
        """Called once when training starts, also for a method without parameters (Tip-Adapter builds its cache
        here), before the optimizer takes the parameters and before a resume restores the checkpoint's parameters
        and :meth:`extra_state` (which then overwrite what this set).

        ``frozen_features()`` encodes (or reads from the cache) frozen CLIP's image features (N, D) of the training
        items' first-epoch views, ``labels`` (N,) their labels: what a method that sets constants from the whole
        training set before tuning needs (CLAP's class-wise multipliers). Default: nothing.
        """

    def on_step_start(self, epoch: int, step: int) -> None:
        """Called before each training step's forward pass (0-based ``epoch`` and ``step`` within it). A method that
        draws something per step (ProDA's prompt batch) derives it from these, so a resumed run repeats it."""

    def on_epoch_end(self, epoch: int, epochs: int) -> None:
        """Called after every epoch ``epoch`` (0-based) of ``epochs``, after the optimizer's last step."""

    def on_fit_end(self) -> None:
        """Called once training has reached its last epoch (also when a finished run is resumed)."""

    def extra_state(self) -> dict[str, Tensor]:
        """Training state beyond the parameters (e.g. running averages), saved with every checkpoint."""
        return {}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`extra_state` from a checkpoint."""
        if state:
            fail("method state", f"empty for {self.name}", sorted(state))

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


def total_loss(loss: Tensor, terms: MethodLosses) -> Tensor:
    """``loss + sum(weight * value)`` over a method's terms (terms of weight 0 are only logged)."""
    for weight, value in terms.values():
        if weight:
            loss = loss + weight * value
    return loss


# --------------------------------------------------------------------------------------------------------------------
# Registry
METHODS: dict[str, type[PromptMethod]] = {}

# Every module of this package is imported on first use of the registry, so a new method is one file (plus its
# recipe entry): its `@register_method` runs then. Modules that only hold shared helpers register nothing.
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
        fail_unknown("method", name, sorted(METHODS))
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
        package = importlib.import_module("calprompt.methods")
        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not module.name.startswith("_"):
                importlib.import_module(f"calprompt.methods.{module.name}")
        _loaded = True
