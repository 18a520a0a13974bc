"""PromptSRC: size, the self-regularisation terms against naive oracles, Gaussian prompt aggregation, exact resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from calprompt.calibration import build_objective
from calprompt.clip import Preprocess, wrap_open_clip_model
from calprompt.clip.zeroshot import zero_shot_text_features
from calprompt.engine.checkpoint import STATE_FILE
from calprompt.engine.train import TrainConfig, Trainer
from calprompt.methods import build_method
from calprompt.methods.imagenet_templates import IMAGENET_TEMPLATES_60
from calprompt.methods.promptsrc import gpa_weights
from tests.synthetic import synthetic_splits, synthetic_training_data
from tests.tiny_models import make_tiny_clip

NAMES = ["dog", "golden retriever", "sea or lake"]
TEMPLATES = ("a photo of a {}.", "a bad photo of the {}.", "art of the {}.")


def test_vitb16_parameter_count(vitb16_backbone):
    method = build_method("promptsrc", vitb16_backbone, NAMES[:2], teacher_templates=TEMPLATES)  # 4 + 4, depth 9
    assert method.num_trainable_parameters() == 9 * 4 * 512 + 9 * 4 * 768 == 46_080
    assert len(IMAGENET_TEMPLATES_60) == len(set(IMAGENET_TEMPLATES_60)) == 60


def test_gpa_weights_are_the_paper_values():
    expected = [0.004432, 0.053991, 0.241971, 0.398942, 0.241971, 0.053991, 0.004432]  # epochs 12..18 of 20
    for weights in (gpa_weights(20, 15.0, 1.0), gpa_weights(20, None, 1.0)):  # None: 0.75 * 20 = 15
        assert weights.dtype == torch.float64 and weights.shape == (20,)
        assert abs(weights.sum().item() - 1.0) <= 1e-12
        assert all(abs(w - e) <= 5e-7 for w, e in zip(weights[11:18].tolist(), expected, strict=True))
    short = gpa_weights(4, None, 1.0)  # peak at 3 of 4 epochs; the normal density, normalised
    density = [math.exp(-0.5 * (e - 3.0) ** 2) for e in range(1, 5)]
    assert short.tolist() == pytest.approx([d / sum(density) for d in density], abs=1e-15)


def test_teacher_is_the_normalised_mean_of_raw_features(tiny_backbone):
    method = build_method("promptsrc", tiny_backbone, NAMES, teacher_templates=TEMPLATES)
    raw = torch.zeros(len(NAMES), tiny_backbone.embed_dim, dtype=torch.float64)
    for template in TEMPLATES:  # one template at a time, open_clip's own encoder, all 77 positions
        ids = tiny_backbone.tokenize([template.format(name) for name in NAMES])
        raw += tiny_backbone.model.encode_text(ids).double()
    expected = raw / raw.norm(dim=-1, keepdim=True)
    assert (method.teacher_text_features.double() - expected).abs().max().item() <= 1e-6
    mean_of_normalised = zero_shot_text_features(tiny_backbone, NAMES, TEMPLATES)
    assert not torch.allclose(method.teacher_text_features, mean_of_normalised, atol=1e-6)


def test_losses_match_a_naive_computation(tiny_backbone):
    method = build_method("promptsrc", tiny_backbone, NAMES, teacher_templates=TEMPLATES)
    generator = torch.Generator().manual_seed(0)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)  # noqa: E731
    inputs = {
        "logits": torch.randn(5, 3, generator=generator) * 4,
        "text_features": unit(3, tiny_backbone.embed_dim),
        "image_features": unit(5, tiny_backbone.embed_dim),
        "zs_image_features": unit(5, tiny_backbone.embed_dim),
    }
    terms = method.losses(inputs)
    assert {name: weight for name, (weight, _) in terms.items()} == {
        "src_text_l1": 25.0,
        "src_image_l1": 10.0,
        "src_logit_kl": 1.0,
    }
    d = {k: v.double() for k, v in inputs.items()}
    teacher = method.teacher_text_features.double()
    zs_logits = tiny_backbone.logit_scale.double() * d["zs_image_features"] @ teacher.t()
    p_zs, p = zs_logits.softmax(-1), d["logits"].softmax(-1)
    kl = (p_zs * (p_zs.log() - p.log())).sum() / (5 * 3)  # KL(p_zs || p) / (B * C)
    text_l1 = (d["text_features"] - teacher).abs().mean()
    image_l1 = (d["image_features"] - d["zs_image_features"]).abs().mean()
    for name, value in (("src_logit_kl", kl), ("src_text_l1", text_l1), ("src_image_l1", image_l1)):
        assert abs(terms[name][1].item() - value.item()) <= 1e-6 * max(1.0, abs(value.item())), name


# --------------------------------------------------------------------------------------------------------------------
# Training: GPA and resume (tiny backbone, synthetic images)
EPOCHS = 4


def _trainer(backbone, checkpoint_dir=None) -> Trainer:
    splits = synthetic_splits()
    torch.manual_seed(3)
    method = build_method("promptsrc", backbone, splits.classnames, teacher_templates=TEMPLATES)
    data = synthetic_training_data(backbone, splits)
    config = TrainConfig(epochs=EPOCHS, batch_size=8, lr=0.05, seed=3, warmup_lr=0.01)
    return Trainer(method, build_objective("ours"), data, config, checkpoint_dir=checkpoint_dir)


def test_evaluated_prompts_are_the_gaussian_average_of_the_epochs(tiny_backbone):
    trainer = _trainer(tiny_backbone)
    method, snapshots = trainer.method, []
    record = method.on_epoch_end

    def snapshot_then_aggregate(epoch: int, epochs: int) -> None:
        snapshots.append({k: v.detach().double().clone() for k, v in method.trainable_parameters().items()})
        record(epoch, epochs)

    method.on_epoch_end = snapshot_then_aggregate
    result = trainer.fit()
    assert len(snapshots) == EPOCHS and "src_logit_kl" in result.history[-1].losses
    mu = 0.75 * EPOCHS  # the default peak; sigma 1
    density = [math.exp(-0.5 * (e - mu) ** 2) for e in range(1, EPOCHS + 1)]
    weights = [d / sum(density) for d in density]
    for name, param in method.trainable_parameters().items():
        average = sum(w * s[name] for w, s in zip(weights, snapshots, strict=True))
        assert not torch.equal(param.double(), snapshots[-1][name])  # not the last epoch's prompts
        torch.testing.assert_close(param.double(), average, rtol=1e-6, atol=1e-8)
    assert int(method.extra_state()["gpa_epochs"]) == EPOCHS


def _train_to(checkpoint_dir: str, block_in_epoch: int | None = None) -> dict[str, torch.Tensor]:
    """Entry point of the killed child process too: train, optionally hanging once epoch ``block_in_epoch`` starts."""
    backbone = wrap_open_clip_model(make_tiny_clip(), name="tiny-test", preprocess=Preprocess(image_size=32))
    trainer = _trainer(backbone, checkpoint_dir)
    if block_in_epoch is not None:

        def progress(iterator, total, description):
            if description.startswith(f"epoch {block_in_epoch}/"):
                time.sleep(600)  # the parent kills us here, after the previous epoch's checkpoint
            return iterator

        trainer.progress = progress
    trainer.fit()
    return trainer.method.trainable_state_dict()


def _checkpoint_epoch(folder: Path) -> int | None:
    path = folder / STATE_FILE
    return json.loads(path.read_text())["epoch"] if path.exists() else None  # written atomically: never partial


def test_run_killed_after_an_epoch_resumes_bit_identical(tmp_path):
    cut = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    code = f"from tests.methods.test_methods_promptsrc import _train_to; _train_to({str(cut)!r}, block_in_epoch=3)"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[2])
    deadline = time.time() + 120
    while _checkpoint_epoch(cut) != 1 and time.time() < deadline:  # 0-based: after the second epoch
        assert child.poll() is None, "the child run ended before it was killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _checkpoint_epoch(cut) == 1

    resumed = _train_to(str(cut))  # picks up after epoch 2, with the GPA sums of epochs 1 and 2
    uninterrupted = _train_to(str(tmp_path / "full"))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in resumed)
