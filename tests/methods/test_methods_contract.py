"""The contract every registered method keeps, run over all of them (a new method joins by registering).

A test-only method (`probe`) uses every hook and flag of the contract: image-conditioned text, a changed image
encoder (switchable by config), every loop input, a custom update rule, epoch-end state and a fit-end swap. So each
branch of the training and evaluation loops runs in this suite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from calprompt.calibration import INPUT_NAMES, build_objective
from calprompt.calibration.outliers import OutlierPool
from calprompt.calibration.registry import OUTLIER_INPUTS
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.data import ImageTransformConfig
from calprompt.engine.data import TrainingData
from calprompt.engine.evaluate import predict
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.methods import METHODS, MethodConfig, PromptMethod, available_methods, build_method, register_method
from calprompt.methods.base import MethodLosses, total_loss
from calprompt.methods.text_prompts import ClassPromptTokens, initial_context
from tests.interrupt import StopTrainingError, stop_at_epoch
from tests.synthetic import synthetic_splits, synthetic_training_data

TRANSFORM = ImageTransformConfig(image_size=32, train_scale=(0.5, 1.0))
OUTLIER_NAMES = ("tree", "car", "house", "boat", "cloud")


@dataclass(frozen=True)
class ProbeConfig(MethodConfig):
    touch_image: bool = True  # image features from visual prompt tokens (not cacheable)
    per_image_text: bool = True  # text features shifted by each image's feature
    extra_term: str = "gap"  # the name of its own loss term (a clash with the objective's names is an error)
    poison: bool = False  # make the loss NaN


class Probe(PromptMethod):
    """Exercises the whole contract; its numbers mean nothing."""

    config_type = ProbeConfig
    seen: set[str]

    @property
    def image_encoder_untouched(self) -> bool:
        return not self.config.touch_image

    @property
    def text_depends_on_image(self) -> bool:
        return self.config.per_image_text

    @property
    def needs(self) -> frozenset[str]:
        if self.config.per_image_text:  # outlier names get prompts of their own only where text ignores the image
            return frozenset(INPUT_NAMES) - set(OUTLIER_INPUTS)
        return frozenset(INPUT_NAMES)

    def init_parameters(self, classnames: tuple[str, ...]) -> None:
        self.ctx = nn.Parameter(initial_context(self.backbone, 4, "a photo of a", 0.0).to(self.backbone.device))
        self.shift = nn.Parameter(torch.zeros(self.backbone.embed_dim))
        self.visual = nn.Parameter(torch.zeros(1, self.backbone.vision_width))
        self.prompts = ClassPromptTokens(4)
        self.register_buffer("epochs_seen", torch.zeros(()), persistent=False)
        self.register_buffer("ctx_sum", torch.zeros_like(self.ctx), persistent=False)
        self.seen = set()

    def build_prompts(self, classnames: tuple[str, ...]) -> None:
        self.prompts.build(self.backbone, classnames)

    def encode_image(self, images: Tensor) -> Tensor:
        if not self.config.touch_image:
            return super().encode_image(images)
        return self.backbone.encode_image(images, prompts=self.visual)

    def encode_text(self, image_features: Tensor | None = None) -> Tensor:
        text = self.backbone.encode_text_embeddings(self.prompts.assemble(self.ctx), self.prompts.ids)  # (C, E)
        if not self.config.per_image_text:
            return text + self.shift
        return text.unsqueeze(0) + image_features.unsqueeze(1) * self.shift  # (B, C, E)

    def losses(self, inputs: Mapping[str, Any]) -> MethodLosses:
        self.seen |= set(inputs)
        assert all(v.dtype == torch.float32 for k, v in inputs.items() if k not in ("labels", "zs_text_moments"))
        gap = (inputs["image_features"] - inputs["zs_image_features"]).square().sum(-1).mean()
        if self.config.poison:
            gap = gap * float("nan")
        return {self.config.extra_term: (0.5, gap), "logged_only": (0.0, inputs["zs_logits"].mean())}

    def backward(self, loss: Tensor, terms: MethodLosses, scale: Callable[[Tensor], Tensor]) -> None:
        scale(2.0 * total_loss(loss, terms)).backward()  # a custom rule: twice the gradient

    def on_epoch_end(self, epoch: int, epochs: int) -> None:
        self.epochs_seen += 1
        self.ctx_sum += self.ctx.detach()

    def on_fit_end(self) -> None:
        with torch.no_grad():
            self.ctx.copy_(self.ctx_sum / self.epochs_seen)  # evaluate the average over epochs

    def extra_state(self) -> dict[str, Tensor]:
        return {"epochs_seen": self.epochs_seen, "ctx_sum": self.ctx_sum}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        self.epochs_seen.copy_(state["epochs_seen"])
        self.ctx_sum.copy_(state["ctx_sum"])


if "probe" not in METHODS:
    register_method("probe")(Probe)

TRAINING_FREE = ("zeroshot", "tip_adapter")  # nothing to optimise (Tip-Adapter builds its cache when training starts)
TRAINABLE = [name for name in available_methods() if name not in TRAINING_FREE]
ALL = available_methods()


def _build(backbone, name: str, classnames, seed: int = 0, **options) -> PromptMethod:
    torch.manual_seed(seed)
    return build_method(name, backbone, classnames, **options)


def _images(n: int = 3) -> Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _data(backbone, splits) -> TrainingData:
    pool = OutlierPool(OUTLIER_NAMES, zero_shot_text_features(backbone, OUTLIER_NAMES, splits.template), 3)
    return synthetic_training_data(backbone, splits, outliers=pool)


def _train(backbone, name, *, epochs=3, checkpoint_dir=None, progress=None, feature_cache=True, objective="ours"):
    splits = synthetic_splits()
    method = _build(backbone, name, splits.classnames, seed=3)
    config = TrainConfig(epochs=epochs, batch_size=8, lr=0.05, seed=3, warmup_lr=0.01, feature_cache=feature_cache)
    data, objective = _data(backbone, splits), build_objective(objective)
    trainer = Trainer(method, objective, data, config, checkpoint_dir=checkpoint_dir, progress=progress)
    return method, trainer.fit()


def test_every_builtin_method_is_in_the_suite():
    builtin = {"zeroshot", "coop", "cocoop", "kgcoop", "prograd", "maple", "ivlp", "vpt", "promptsrc"}
    builtin |= {"clip_adapter", "zslp", "clap", "taskres", "proda", "tip_adapter", "tip_adapter_f"}
    assert {*builtin, "probe"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_output_shapes(tiny_backbone, name):
    splits = synthetic_splits()
    method = _build(tiny_backbone, name, splits.classnames)
    output = method(_images())
    num_classes, dim = len(splits.classnames), tiny_backbone.embed_dim
    assert output.logits.shape == (3, num_classes)
    assert output.image_features.shape == (3, dim)
    expected = (3, num_classes, dim) if method.text_depends_on_image else (num_classes, dim)
    assert output.text_features.shape == expected
    torch.testing.assert_close(output.text_features.norm(dim=-1), torch.ones(expected[:-1]))
    torch.testing.assert_close(output.image_features.norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize("name", TRAINABLE)
def test_gradients_reach_only_prompt_parameters(tiny_backbone, name):
    splits = synthetic_splits()
    method = _build(tiny_backbone, name, splits.classnames)
    # As the loop hands it to the optimizer: after it saw its training set (Tip-Adapter-F's keys come from it).
    Trainer(method, build_objective("none"), _data(tiny_backbone, splits), TrainConfig(1, 8, 0.05)).begin()
    logits = method(_images(16)).logits
    torch.nn.functional.cross_entropy(logits, torch.arange(16) % logits.shape[1]).backward()
    trainable = method.trainable_parameters()
    assert trainable and all(not key.startswith("backbone.") for key in trainable)
    # Every prompt parameter is in the graph (a ReLU of a tiny meta-net may be dead for all images: zero, not None).
    assert [key for key, p in trainable.items() if p.grad is None] == []
    assert sum(float(p.grad.abs().sum()) for p in trainable.values()) > 0
    assert all(p.grad is None and not p.requires_grad for p in tiny_backbone.parameters())


@pytest.mark.parametrize("name", TRAINABLE)
def test_save_load_round_trip_is_exact(tiny_backbone, name):
    splits = synthetic_splits()
    trained, _ = _train(tiny_backbone, name, epochs=2)
    fresh = _build(tiny_backbone, name, splits.classnames, seed=11)
    images = _images()
    assert not torch.equal(fresh(images).logits, trained(images).logits)
    fresh.load_trainable_state_dict(trained.trainable_state_dict())
    assert torch.equal(fresh(images).logits, trained(images).logits)


@pytest.mark.parametrize("name", ALL)
def test_class_list_switch_keeps_the_learned_prompts(tiny_backbone, name):
    """A method switches class lists and back without losing anything; a class-specific one refuses any other list
    (one weight per class: it cannot name a new class) and is left as it was."""
    splits = synthetic_splits(num_classes=6)
    base, novel = splits.classnames[:4], splits.classnames[4:]
    method = _build(tiny_backbone, name, base)
    images = _images()
    before = method(images).logits
    if method.class_specific:
        for other in (novel, (*base[:3], novel[0]), base[::-1]):
            with pytest.raises(ValueError, match=f"classnames of {name}.*protocol: all"):
                method.set_classnames(other)
        with pytest.raises(ValueError, match="can name other classes"):
            method.encode_text_for(OUTLIER_NAMES)
        assert method.classnames == tuple(base)
    else:
        method.set_classnames(novel)
        assert method(images).logits.shape == (3, 2)
    method.set_classnames(base)
    assert torch.equal(method(images).logits, before)


@pytest.mark.parametrize("name", TRAINABLE)
def test_resume_after_an_epoch_is_exact(tiny_backbone, name, tmp_path):
    full, _ = _train(tiny_backbone, name, checkpoint_dir=tmp_path / "full")
    with pytest.raises(StopTrainingError):
        _train(tiny_backbone, name, checkpoint_dir=tmp_path / "cut", progress=stop_at_epoch(1))
    resumed, result = _train(tiny_backbone, name, checkpoint_dir=tmp_path / "cut")
    assert result.resumed_from_epoch == 1
    for key, value in full.trainable_state_dict().items():
        assert torch.equal(resumed.trainable_state_dict()[key], value), key
    for key, value in full.extra_state().items():
        assert torch.equal(resumed.extra_state()[key], value), key


@pytest.mark.parametrize("name", TRAINABLE)
def test_cached_and_online_training_agree_where_the_image_encoder_is_untouched(tiny_backbone, name):
    cached, cached_result = _train(tiny_backbone, name, epochs=2, feature_cache=True)
    online, online_result = _train(tiny_backbone, name, epochs=2, feature_cache=False)
    assert cached_result.used_feature_cache == cached.image_encoder_untouched
    assert not online_result.used_feature_cache
    for key, value in cached.trainable_state_dict().items():
        # The cached path encodes each epoch's views in one batch, the on-line path batch by batch: float32 sums in
        # another order, amplified through two epochs of updates at lr 0.05.
        torch.testing.assert_close(online.trainable_state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_probe_sees_every_input_in_float32_and_its_hooks_run(tiny_backbone, tmp_path):
    method, result = _train(tiny_backbone, "probe", epochs=2, checkpoint_dir=tmp_path)
    assert method.seen == set(INPUT_NAMES) - set(OUTLIER_INPUTS)  # per-image text: no outlier prompts
    assert {"gap", "logged_only", "loss", "cross_entropy"} <= set(result.history[-1].losses)
    assert int(method.epochs_seen) == 2
    assert not result.used_feature_cache  # the probe changes the image encoder


def test_logged_only_terms_are_not_in_the_loss():
    one, two = torch.tensor(1.0), torch.tensor(5.0)
    assert total_loss(one, {"a": (0.5, two), "b": (0.0, two)}) == 3.5


def test_probe_with_untouched_image_encoder_trains_on_cached_features(tiny_backbone):
    splits = synthetic_splits()
    method = _build(tiny_backbone, "probe", splits.classnames, touch_image=False)
    assert method.image_encoder_untouched and method.text_depends_on_image
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, seed=3)
    result = Trainer(method, build_objective("penalty"), _data(tiny_backbone, splits), config).fit()
    assert result.used_feature_cache


@pytest.mark.parametrize("touch_image", [True, False])
@pytest.mark.parametrize("per_image_text", [True, False])
def test_evaluation_loop_equals_the_forward_pass(tiny_backbone, touch_image, per_image_text):
    """Every branch of the evaluation loop (cached or on-line images, shared or per-image text) gives the logits of
    the forward pass on the same images."""
    splits = synthetic_splits()
    method = _build(tiny_backbone, "probe", splits.classnames, touch_image=touch_image, per_image_text=per_image_text)
    with torch.no_grad():
        method.shift.normal_()
        method.visual.normal_()
    predictions = predict(method, splits.test, TRANSFORM, loader=splits.image_loader, batch_size=5)
    assert (predictions.text_features is None) == per_image_text  # per-image text: nothing to hand to DAC
    from calprompt.data.transforms import build_test_transform

    transform = build_test_transform(TRANSFORM)
    images = torch.stack([transform(splits.image_loader(item.impath)) for item in splits.test])
    with torch.no_grad():
        expected = method(images).logits
    torch.testing.assert_close(predictions.logits, expected, rtol=1e-5, atol=1e-4)


def _probe_trainer(backbone, objective="ours", data=None, **options) -> Trainer:
    splits = synthetic_splits()
    method = _build(backbone, "probe", splits.classnames, **options)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, seed=3)
    return Trainer(method, build_objective(objective), data or _data(backbone, splits), config)


def test_a_nan_loss_stops_training_with_a_clear_error(tiny_backbone):
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        _probe_trainer(tiny_backbone, poison=True).fit()


def test_method_terms_may_not_shadow_the_objective(tiny_backbone):
    with pytest.raises(ValueError, match="distinct"):
        _probe_trainer(tiny_backbone, extra_term="cross_entropy").fit()


def test_missing_or_mismatched_zero_shot_features_are_named(tiny_backbone):
    splits = synthetic_splits()
    data = _data(tiny_backbone, splits)
    data.zero_shot_text_features = None
    with pytest.raises(ValueError, match="zero_shot_text_features"):
        _probe_trainer(tiny_backbone, data=data).fit()
    data.zero_shot_text_features = torch.zeros(2, tiny_backbone.embed_dim)
    with pytest.raises(ValueError, match="one row per class"):
        _probe_trainer(tiny_backbone, data=data).fit()


def test_a_method_without_parameters_trains_nothing(tiny_backbone, tmp_path):
    splits = synthetic_splits()
    method = _build(tiny_backbone, "zeroshot", splits.classnames)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05)
    result = Trainer(
        method, build_objective("ours"), _data(tiny_backbone, splits), config, checkpoint_dir=tmp_path
    ).fit()
    assert result.history == [] and not any(tmp_path.iterdir())


def test_resume_without_momentum_is_exact(tiny_backbone, tmp_path):
    splits = synthetic_splits()

    def run(folder, progress=None):
        method = _build(tiny_backbone, "coop", splits.classnames, seed=3)
        config = TrainConfig(epochs=3, batch_size=8, lr=0.05, seed=3, momentum=0.0)
        data = _data(tiny_backbone, splits)
        Trainer(method, build_objective("none"), data, config, checkpoint_dir=folder, progress=progress).fit()
        return method

    full = run(tmp_path / "full")
    with pytest.raises(StopTrainingError):
        run(tmp_path / "cut", stop_at_epoch(1))
    assert torch.equal(run(tmp_path / "cut").ctx, full.ctx)


def test_probe_with_shared_text_sees_the_outlier_inputs(tiny_backbone):
    splits = synthetic_splits()
    method = _build(tiny_backbone, "probe", splits.classnames, per_image_text=False)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, seed=3)
    Trainer(method, build_objective("dor"), _data(tiny_backbone, splits), config).fit()
    assert method.seen == set(INPUT_NAMES)
    assert method.classnames == splits.classnames  # the outlier prompts were built and the class list restored
