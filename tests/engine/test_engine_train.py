"""The training loop: cached vs on-line equivalence, exact resume, checkpoints, what gets trained."""

from __future__ import annotations

import pytest
import torch

from calprompt.calibration import build_objective
from calprompt.data import FeatureCache, ImageTransformConfig
from calprompt.engine.data import TrainingData
from calprompt.engine.evaluate import predict
from calprompt.engine.train import TrainConfig, Trainer, epoch_batches
from calprompt.methods import build_method
from tests.interrupt import StopTrainingError, stop_at_epoch
from tests.synthetic import synthetic_splits, synthetic_training_data

TRANSFORM = ImageTransformConfig(image_size=32, train_scale=(0.5, 1.0))


def _setup(backbone, *, objective="ours", cache=None, seed=3):
    splits = synthetic_splits()
    torch.manual_seed(seed)
    method = build_method("coop", backbone, splits.classnames)
    data = synthetic_training_data(backbone, splits, cache=cache)
    return splits, method, build_objective(objective), data


def _config(**changes):
    values = {"epochs": 3, "batch_size": 8, "lr": 0.05, "seed": 3, "warmup_epochs": 1, "warmup_lr": 0.01}
    values.update(changes)
    return TrainConfig(**values)


@pytest.mark.parametrize("objective", ["ours", "penalty"])
def test_cached_and_online_training_follow_the_same_trajectory(tiny_backbone, objective):
    _, cached_method, obj, data = _setup(tiny_backbone, objective=objective)
    cached = Trainer(cached_method, obj, data, _config(feature_cache=True)).fit()
    _, online_method, obj, data = _setup(tiny_backbone, objective=objective)
    online = Trainer(online_method, obj, data, _config(feature_cache=False)).fit()
    assert cached.used_feature_cache and not online.used_feature_cache
    for a, b in zip(cached.history, online.history, strict=True):
        assert a.losses.keys() == b.losses.keys()
        for key in a.losses:
            assert a.losses[key] == pytest.approx(b.losses[key], rel=1e-4, abs=1e-6)
    assert torch.allclose(cached_method.ctx, online_method.ctx, atol=1e-5)
    assert not torch.allclose(cached_method.ctx, _setup(tiny_backbone)[1].ctx)  # it did train


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_after_interruption_gives_the_same_weights(tiny_backbone, tmp_path, optimizer):
    """Exact for Adam too: its two moment estimates and its step count (bias correction) come back."""
    config = _config(epochs=4, optimizer=optimizer)
    _, method, obj, data = _setup(tiny_backbone)
    Trainer(method, obj, data, config, checkpoint_dir=tmp_path / "full").fit()

    _, first, obj, data = _setup(tiny_backbone)
    with pytest.raises(StopTrainingError):
        Trainer(first, obj, data, config, checkpoint_dir=tmp_path / "cut", progress=stop_at_epoch(2)).fit()
    _, resumed, obj, data = _setup(tiny_backbone)
    result = Trainer(resumed, obj, data, config, checkpoint_dir=tmp_path / "cut").fit()
    assert result.resumed_from_epoch == 2
    assert [log.epoch for log in result.history] == [0, 1, 2, 3]
    assert torch.equal(resumed.ctx, method.ctx)


def test_adam_first_step_moves_every_weight_by_the_learning_rate(tiny_backbone):
    """Adam (Kingma & Ba, 2015) without weight decay: after one step the bias-corrected moments are ``g`` and
    ``g^2``, so each weight moves by ``lr * g / (|g| + eps)``: ``lr`` in size whatever its gradient (SGD would move
    it by ``lr * g``). One batch of every item, no warm-up, one epoch (the cosine schedule starts at ``lr``)."""
    _, method, obj, data = _setup(tiny_backbone, objective="none")
    before = method.ctx.detach().clone()
    lr = 1e-3
    config = _config(epochs=1, batch_size=len(data.items), lr=lr, warmup_epochs=0, weight_decay=0.0, optimizer="adam")
    Trainer(method, obj, data, config).fit()
    moved = (method.ctx.detach() - before).abs()
    assert torch.allclose(moved, torch.full_like(moved, lr), rtol=1e-4, atol=0)


def test_checkpoint_of_another_run_is_refused(tiny_backbone, tmp_path):
    _, method, obj, data = _setup(tiny_backbone)
    Trainer(method, obj, data, _config(epochs=2), checkpoint_dir=tmp_path).fit()
    _, method, _, data = _setup(tiny_backbone)
    with pytest.raises(ValueError, match="different run"):
        Trainer(method, build_objective("none"), data, _config(epochs=2), checkpoint_dir=tmp_path).fit()


def test_backbone_untouched_and_loss_decreases(tiny_backbone):
    before = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    _, method, obj, data = _setup(tiny_backbone, objective="none")
    result = Trainer(method, obj, data, _config(epochs=6, lr=0.2, warmup_epochs=0)).fit()
    assert all(torch.equal(before[k], v) for k, v in tiny_backbone.state_dict().items())
    assert result.history[-1].losses["loss"] < result.history[0].losses["loss"]


def test_feature_cache_is_reused_across_runs(tiny_backbone, tmp_path):
    cache = FeatureCache(tmp_path)
    _, method, obj, data = _setup(tiny_backbone, cache=cache)
    Trainer(method, obj, data, _config(epochs=2)).fit()
    entries = sorted(tmp_path.rglob("*.npy"))
    assert len(entries) == 2  # one view per epoch
    stamps = [p.stat().st_mtime_ns for p in entries]

    def fail_encode(images):
        raise AssertionError("the cache should have answered")

    _, method, obj, data = _setup(tiny_backbone, objective="none", cache=cache)
    data.encode_image = fail_encode  # a different objective with the same seed reuses the views
    Trainer(method, obj, data, _config(epochs=2)).fit()
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("*.npy"))] == stamps


def test_distinct_views_cycle(tiny_backbone):
    _, method, obj, data = _setup(tiny_backbone)
    calls = []
    encode = data.encode_image

    def counting(images):
        calls.append(images.shape[0])
        return encode(images)

    data.encode_image = counting
    Trainer(method, obj, data, _config(epochs=5, distinct_views=2)).fit()
    assert sum(calls) == 2 * len(data.items)


def test_epoch_batches_are_seeded_and_drop_the_incomplete_last():
    a = epoch_batches(20, 8, seed=1, epoch=0)
    assert [len(b) for b in a] == [8, 8]
    assert all(torch.equal(x, y) for x, y in zip(a, epoch_batches(20, 8, seed=1, epoch=0), strict=True))
    assert not torch.equal(torch.cat(a), torch.cat(epoch_batches(20, 8, seed=1, epoch=1)))
    assert [len(b) for b in epoch_batches(5, 8, seed=1, epoch=0)] == [5]


def test_predict_uses_text_features_once(tiny_backbone):
    splits, method, _, _ = _setup(tiny_backbone)
    calls = []
    original = method.encode_text

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    method.encode_text = counting
    predictions = predict(method, splits.test, TRANSFORM, loader=splits.image_loader, batch_size=5)
    assert len(calls) == 1
    assert predictions.logits.shape == (len(splits.test), 4)
    assert torch.equal(predictions.labels, torch.tensor([item.label for item in splits.test]))


def test_bad_train_config():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(epochs=1, batch_size=2, lr=0.1, precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(epochs=1, batch_size=0, lr=0.1)
    with pytest.raises(ValueError, match=r"`optimizer`.*'sgd', 'adam'.*'adamw'"):
        TrainConfig(epochs=1, batch_size=2, lr=0.1, optimizer="adamw")


class _Float64Features(TrainingData):
    """The cached frozen features (float32 on disk and in memory) handed to the loop in float64."""

    def frozen_features(self, view_epoch, config):
        return super().frozen_features(view_epoch, config).double()


def test_gradient_accumulation_equals_the_larger_batch(tiny_clip):
    """Two accumulated half batches of a mean loss give the update of the whole batch (CE is a per-sample mean).

    Compared in float64: the two schedules sum the same per-sample gradients in another order, which in float32
    differs by ~1e-7 relative per term, and three epochs of momentum SGD amplify that to 1e-6..3e-5 relative on the
    weights (another machine failed `atol=1e-6` with 3.1498e-02 vs 3.1499e-02). In float64 the same reordering costs
    ~1e-16 relative per term; after the same amplification (measured: 6e-15 relative) `rtol=1e-10` keeps four orders
    of margin, while omitting the accumulation changes the weights by ~0.8 (asserted below).
    """
    import copy

    from calprompt.clip import Preprocess, wrap_open_clip_model

    backbone = wrap_open_clip_model(
        copy.deepcopy(tiny_clip).double(), name="tiny-test-f64", preprocess=Preprocess(image_size=32)
    )
    runs = {}
    schedules = {"whole": {"batch_size": 8}, "halves": {"batch_size": 4, "grad_accumulation": 2}, "single": {}}
    for name, changes in schedules.items():
        _, method, obj, data = _setup(backbone, objective="none")
        method.double()  # the context vectors are created in float32, from the same seed in every run
        data.__class__ = _Float64Features
        Trainer(method, obj, data, _config(**{"batch_size": 4, **changes})).fit()
        runs[name] = method.ctx.detach()
    assert runs["whole"].dtype == torch.float64
    assert torch.allclose(runs["whole"], runs["halves"], rtol=1e-10, atol=1e-12)
    assert (runs["whole"] - runs["single"]).abs().max() > 1e-2  # without accumulation the updates differ


def test_bf16_autocast_trains_with_float32_regularizers(tiny_backbone):
    _, method, obj, data = _setup(tiny_backbone)
    result = Trainer(method, obj, data, _config(epochs=2, precision="bf16")).fit()
    losses = result.history[-1].losses
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses["text_moment_matching"] > 0  # the term is live under autocast (its float32 maths: tests/calibration)
    assert method.ctx.dtype == torch.float32
