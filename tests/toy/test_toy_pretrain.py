"""Pretraining: smoke run, exact resume, recipe scaling, schedule and loss against open_clip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss
from safetensors.torch import load_file

from calprompt.toy import pretrain as pretrain_module
from calprompt.toy.model import load_toy_clip_model
from calprompt.toy.pretrain import DEFAULT_RECIPE, Stage, clip_loss, pretrain, scale_recipe

TINY = (
    Stage("a", 2, 1e-3, {"photo": 1.0}, 0.5, warmup=1),
    Stage("b", 2, 5e-4, {"inverted": 1.0, "sketch": 1.0}, {"inverted": 0.2, "sketch": 1.0}, warmup=0),
)


def run(out_dir, **kwargs):
    settings = {"batch_size": 4, "num_workers": 0, "eval_datasets": (), "checkpoint_every": 2, "log_every": 1}
    return pretrain(out_dir, TINY, **{**settings, **kwargs})


def test_smoke_run_writes_a_loadable_checkpoint(tmp_path):
    stages = scale_recipe(DEFAULT_RECIPE, 3)
    result = pretrain(tmp_path, stages, batch_size=8, num_workers=0, eval_datasets=["toy-texture"])
    assert result.steps == 3 and result.checkpoint == tmp_path / "toy_clip.safetensors"
    model, meta = load_toy_clip_model(result.checkpoint)
    assert meta["steps"] == 3 and meta["batch_size"] == 8
    assert meta["zero_shot_test"] == result.zero_shot
    assert 0 <= result.zero_shot["toy-texture"]["accuracy"] <= 1
    assert model.logit_scale.exp().item() <= 100.0 + 1e-3


def test_interrupted_run_resumes_to_identical_weights(tmp_path, monkeypatch):
    straight = run(tmp_path / "straight")
    calls = {"n": 0}
    real_batch = pretrain_module.pretraining_batch

    def crash_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "pretraining_batch", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    assert load_file(str(tmp_path / "resumed" / "state" / "model-2.st"))  # state of step 2 survived
    monkeypatch.setattr(pretrain_module, "pretraining_batch", real_batch)
    resumed = run(tmp_path / "resumed")
    assert resumed.steps == 4
    a = load_file(str(straight.checkpoint))
    b = load_file(str(resumed.checkpoint))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "resumed" / "state").iterdir()) == [
        "model-4.st",
        "optim-4.st",
        "progress.json",
    ]


def test_resume_with_other_settings_is_refused(tmp_path):
    run(tmp_path)
    with pytest.raises(ValueError, match=r"same settings.*delete .*state"):
        run(tmp_path, seed=1)


def test_scale_recipe_keeps_proportions_and_total():
    for total in (1, 3, 7, 100, 3100, 6200):
        stages = scale_recipe(DEFAULT_RECIPE, total)
        assert sum(s.steps for s in stages) == total
    doubled = scale_recipe(DEFAULT_RECIPE, 2 * sum(s.steps for s in DEFAULT_RECIPE))
    assert [s.steps for s in doubled] == [2 * s.steps for s in DEFAULT_RECIPE]
    assert [s.lr for s in doubled] == [s.lr for s in DEFAULT_RECIPE]


def test_lr_schedule_warms_up_then_decays_to_zero():
    stage = Stage("s", 100, 1e-3, warmup=10)
    lrs = np.array([stage.lr_at(i) for i in range(100)])
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[10:]) <= 0)
    assert lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_clip_loss_matches_open_clip():
    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    scale = torch.tensor(37.0)
    assert torch.allclose(clip_loss(image, text, scale), ClipLoss()(image, text, scale), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"style_weights": {"oil": 1.0}}, "style_weights"),
        ({"p_mention": 2.0}, "p_mention"),
    ],
)
def test_bad_stage_settings_are_named(kwargs, name):
    settings = {"name": "s", "steps": 10, "lr": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=f"Expected `{name}"):
        Stage(**settings)
