"""Issue 22, Must show 2: many images at once equal the one-image loop of the public code.

The oracle is TPT's loop re-typed (one image at a time: the prompt reset to its initial context, the method's own
shared-context text pass over every view, the confident views selected from that pass, the averaged entropy plus the
regularizer as the public code writes it, one AdamW step on the (n_ctx, D) context, the prediction on the test view).
The batched tuner's per-image logits must equal it to 1e-5 for batches of 1, 7 and 32 images (33 images: batches
of 7 and of 32 end with a partial one), from CoOp's "a photo of a" context and from a trained context.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from calprompt.calibration import build_objective, text_moments
from calprompt.calibration.objective import CalibrationObjective, Term
from calprompt.engine.test_time import BatchedTestTimeTuner, TestTimeSettings, check_tunable
from calprompt.methods import build_method
from tests.test_time_oracles import ctpt_l2_norm_mean, otpt_householder, tpt_avg_entropy, tpt_select_confident_samples

CLASSES = ["red circle", "blue square", "green triangle", "yellow star", "purple ring"]
IMAGES, VIEWS = 33, 16
SETTINGS = TestTimeSettings(views=VIEWS, confident_fraction=0.25, steps=1)
# The regularizer of each variant as the public code adds it to the entropy (lambda: the scripts' constants).
REGULARIZERS = {
    "none": lambda text: 0.0,
    "c-tpt": lambda text: -50.0 * ctpt_l2_norm_mean(text),
    "o-tpt": lambda text: 18.0 * otpt_householder(text),
}


def objective(name: str) -> CalibrationObjective:
    return CalibrationObjective(Term("tpt_entropy"), build_objective(name).terms, name)


def view_features(backbone, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(IMAGES, VIEWS, backbone.embed_dim, generator=g), dim=-1)


def reference_one_image(method, initial, views, settings, regularizer) -> torch.Tensor:
    """TPT's per-image loop: reset, tune the shared context on this image's views, predict its test view."""
    with torch.no_grad():
        method.ctx.copy_(initial)
    optimizer = torch.optim.AdamW([method.ctx], lr=settings.lr)  # TPT: AdamW(params, lr), default weight decay
    scale = method.backbone.logit_scale
    selected = None
    for _ in range(settings.steps):
        text = F.normalize(method.encode_text(), dim=-1)  # (C, E)
        output = scale * views @ text.t()  # (N, C)
        if selected is None:
            output, selected = tpt_select_confident_samples(output, settings.confident_fraction)
        else:
            output = output[selected]
        loss = tpt_avg_entropy(output) + regularizer(text)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        text = F.normalize(method.encode_text(), dim=-1)
        return scale * views[0] @ text.t()


@pytest.fixture(scope="module")
def coop(tiny_backbone):
    torch.manual_seed(0)
    return build_method("coop", tiny_backbone, CLASSES)


@pytest.mark.parametrize(("init", "variant"), [("coop", "none"), ("trained", "c-tpt"), ("coop", "o-tpt")])
def test_batched_equals_one_image_at_a_time(coop, tiny_backbone, init: str, variant: str) -> None:
    torch.manual_seed(1)
    initial = coop.ctx.detach().clone()
    if init == "trained":  # a context moved away from the phrase, as a trained run's
        initial = initial + 0.05 * torch.randn_like(initial)
    with torch.no_grad():
        coop.ctx.copy_(initial)
    features = view_features(tiny_backbone)
    tuner = BatchedTestTimeTuner(coop, objective(variant), SETTINGS)
    expected = torch.stack(
        [reference_one_image(coop, initial, features[i], SETTINGS, REGULARIZERS[variant]) for i in range(IMAGES)]
    )
    with torch.no_grad():
        coop.ctx.copy_(initial)
    before = tiny_backbone.logit_scale * features[:, 0] @ tuner.initial_text.T
    assert (expected - before).abs().amax() > 1e-3  # tuning changed the predictions
    for batch in (1, 7, 32):
        logits = torch.cat([tuner.tune(features[s : s + batch]).logits for s in range(0, IMAGES, batch)])
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_tuning_moves_every_image_its_own_way(coop, tiny_backbone) -> None:
    """The per-image contexts are independent: each image's tuned logits differ from the initial ones, and an
    image tuned beside others equals itself tuned alone (the batch does not leak between images)."""
    features = view_features(tiny_backbone, seed=3)
    tuner = BatchedTestTimeTuner(coop, objective("none"), TestTimeSettings(views=VIEWS, confident_fraction=0.25))
    together = tuner.tune(features[:5])
    alone = tuner.tune(features[2:3])
    torch.testing.assert_close(together.logits[2:3], alone.logits, rtol=0, atol=1e-5)
    assert (together.logits - together.init_logits).abs().amax(1).min() > 1e-4


def test_two_steps_keep_the_first_selection(coop, tiny_backbone) -> None:
    settings = TestTimeSettings(views=VIEWS, confident_fraction=0.25, steps=2)
    features = view_features(tiny_backbone, seed=4)[:3]
    initial = coop.ctx.detach().clone()
    expected = torch.stack([reference_one_image(coop, initial, f, settings, REGULARIZERS["none"]) for f in features])
    with torch.no_grad():
        coop.ctx.copy_(initial)
    tuned = BatchedTestTimeTuner(coop, objective("none"), settings).tune(features)
    torch.testing.assert_close(tuned.logits, expected, rtol=0, atol=1e-5)


def test_batched_adamw_is_per_image_adamw() -> None:
    """AdamW on a (B, n, D) parameter = B AdamW optimizers on (n, D) parameters: it is element-wise."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(4, 3, 5, generator=g)
    grads = [torch.randn(4, 3, 5, generator=g) for _ in range(3)]
    batched = nn.Parameter(start.clone())
    optimizer = torch.optim.AdamW([batched], lr=0.1, weight_decay=0.01)
    singles = [nn.Parameter(start[b].clone()) for b in range(4)]
    optimizers = [torch.optim.AdamW([p], lr=0.1, weight_decay=0.01) for p in singles]
    for grad in grads:
        batched.grad = grad.clone()
        optimizer.step()
        for b, (param, single) in enumerate(zip(singles, optimizers, strict=True)):
            param.grad = grad[b].clone()
            single.step()
    torch.testing.assert_close(batched.detach(), torch.stack([p.detach() for p in singles]), rtol=0, atol=0)


def test_cocoop_and_class_specific_context_are_refused(tiny_backbone) -> None:
    with pytest.raises(ValueError, match=r"`method`.*CoCoOp's prompts depend on the image"):
        check_tunable(build_method("cocoop", tiny_backbone, CLASSES))
    with pytest.raises(ValueError, match=r"`method`.*only parameter is a context"):
        check_tunable(build_method("coop", tiny_backbone, CLASSES, class_specific_context=True))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"views": 0}, "tta_views"),
        ({"confident_fraction": 0.0}, "tta_confident"),
        ({"confident_fraction": 1.5}, "tta_confident"),
        ({"views": 8, "confident_fraction": 0.1}, "confident fraction"),
        ({"optimizer": "adam"}, "tta_optimizer"),
    ],
)
def test_bad_settings_are_refused_naming_them(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TestTimeSettings(**settings)


def test_moment_matching_regularizes_each_image_like_the_one_image_loop(coop, tiny_backbone) -> None:
    """TPT + the paper's text moment matching (lambda 5) against the loop with the moments written out."""
    zero_shot = F.normalize(torch.randn(len(CLASSES), tiny_backbone.embed_dim), dim=-1)
    mean0 = zero_shot.mean(0)
    cov0 = (zero_shot - mean0).T @ (zero_shot - mean0) / len(CLASSES)

    def matching(text: torch.Tensor) -> torch.Tensor:
        mean = text.mean(0)
        cov = (text - mean).T @ (text - mean) / len(CLASSES)
        return 5.0 * ((mean - mean0).square().sum() + (cov - cov0).square().sum())

    features = view_features(tiny_backbone, seed=6)[:3]
    initial = coop.ctx.detach().clone()
    expected = torch.stack([reference_one_image(coop, initial, f, SETTINGS, matching) for f in features])
    with torch.no_grad():
        coop.ctx.copy_(initial)
    tuner = BatchedTestTimeTuner(coop, objective("moments"), SETTINGS, zs_text_moments=text_moments(zero_shot))
    torch.testing.assert_close(tuner.tune(features).logits, expected, rtol=0, atol=1e-5)
