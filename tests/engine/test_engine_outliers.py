"""DOR in the training loop: the drawn outlier names per step, their tuned and frozen features, exact resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from calprompt.calibration import build_objective
from calprompt.calibration.outliers import OutlierPool, outlier_pool
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.methods import build_method
from tests.interrupt import StopTrainingError, stop_at_epoch
from tests.synthetic import synthetic_splits, synthetic_training_data

NAMES = ("tree", "car", "house", "boat", "cloud", "river", "chair")


def _trainer(backbone, *, checkpoint_dir=None, progress=None, epochs=3):
    splits = synthetic_splits()
    torch.manual_seed(3)
    method = build_method("coop", backbone, splits.classnames)
    pool = OutlierPool(NAMES, zero_shot_text_features(backbone, NAMES, splits.template), batch_size=3)
    data = synthetic_training_data(backbone, splits, outliers=pool)
    config = TrainConfig(epochs=epochs, batch_size=8, lr=0.05, seed=3, warmup_lr=0.01)
    objective = build_objective("dor")
    return Trainer(method, objective, data, config, checkpoint_dir=checkpoint_dir, progress=progress), pool


def test_each_step_pulls_the_drawn_outliers_towards_their_frozen_features(tiny_backbone, monkeypatch):
    trainer, pool = _trainer(tiny_backbone, epochs=2)
    drawn, losses = [], []
    method = trainer.method
    encode_for = method.encode_text_for

    def recording(names):
        drawn.append(tuple(names))
        return encode_for(names)

    monkeypatch.setattr(method, "encode_text_for", recording)
    original = type(trainer.objective).components

    def checking(self, *args, **inputs):
        loss, parts = original(self, *args, **inputs)
        names = drawn[-1]
        frozen = pool.features[[NAMES.index(n) for n in names]]
        torch.testing.assert_close(inputs["zs_outlier_text_features"], frozen)
        tuned = F.normalize(encode_for(list(names)), dim=-1)
        torch.testing.assert_close(inputs["outlier_text_features"], tuned)
        losses.append(parts["dor_loss"])
        return loss, parts

    monkeypatch.setattr(type(trainer.objective), "components", checking)  # a spy: check the inputs, then compute
    trainer.fit()
    sampler = pool.sampler(3)
    steps = len(drawn) // 2
    expected = [
        tuple(NAMES[i] for i in sampler.indices(epoch, step).tolist()) for epoch in range(2) for step in range(steps)
    ]
    assert drawn == expected and all(len(names) == 3 for names in drawn)
    assert len(set(drawn)) > 1  # names are resampled
    assert method.classnames == synthetic_splits().classnames
    # 1 - mean cos lies in [0, 2]; at the start the tuned and frozen prompts agree, and float32 cosines of unit
    # vectors can exceed 1 by a few 1e-7.
    assert all(-1e-6 <= float(loss.detach()) <= 2 for loss in losses) and max(float(v.detach()) for v in losses) > 0


def test_dor_resumes_exactly(tiny_backbone, tmp_path):
    full, _ = _trainer(tiny_backbone, checkpoint_dir=tmp_path / "full")
    full.fit()
    cut, _ = _trainer(tiny_backbone, checkpoint_dir=tmp_path / "cut", progress=stop_at_epoch(1))
    with pytest.raises(StopTrainingError):
        cut.fit()
    resumed, _ = _trainer(tiny_backbone, checkpoint_dir=tmp_path / "cut")
    assert resumed.fit().resumed_from_epoch == 1
    assert torch.equal(resumed.method.ctx, full.method.ctx)


def test_missing_outlier_pool_is_named(tiny_backbone):
    trainer, _ = _trainer(tiny_backbone)
    trainer.data.outliers = None
    with pytest.raises(ValueError, match="OutlierPool"):
        trainer.fit()


def test_image_conditioned_prompts_cannot_encode_outliers(tiny_backbone):
    method = build_method("cocoop", tiny_backbone, ["red blob", "blue blob"])
    with pytest.raises(ValueError, match="do not depend on the image"):
        method.encode_text_for(["tree"])


def test_outlier_pool_excludes_class_names_and_words_the_backbone_cannot_spell(tiny_backbone, monkeypatch):
    import calprompt.calibration.nouns as nouns

    monkeypatch.setattr(nouns, "wordnet_nouns", lambda: ("tree", "red blob", "zzqx", "car"))
    monkeypatch.setattr(tiny_backbone.tokenizer, "covers", lambda text: text != "zzqx", raising=False)
    classnames = ("red blob", "green blob")
    base = zero_shot_text_features(tiny_backbone, classnames, "a photo of a {}.")
    pool = outlier_pool(tiny_backbone, classnames, "a photo of a {}.", base)
    assert sorted(pool.names) == ["car", "tree"]
    torch.testing.assert_close(pool.features, zero_shot_text_features(tiny_backbone, pool.names, "a photo of a {}."))
