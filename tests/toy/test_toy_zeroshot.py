"""Zero-shot helpers: ECE against torchmetrics, logits against a hand-built reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from calprompt.toy.downstream import build_toy_dataset, render_items
from calprompt.toy.model import build_toy_clip, images_to_tensor
from calprompt.toy.vocab import tokenizer
from calprompt.toy.zeroshot import evaluate_zero_shot, top_label_ece, zero_shot_logits


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_torchmetrics(n_bins):
    generator = torch.Generator().manual_seed(n_bins)
    logits = 3 * torch.randn(500, 7, generator=generator)
    labels = torch.randint(0, 7, (500,), generator=generator)
    probs = logits.softmax(dim=1)
    edges = probs.max(dim=1).values * n_bins
    assert (edges - edges.round()).abs().min() > 1e-4  # no confidence on a bin edge: conventions agree
    expected = MulticlassCalibrationError(num_classes=7, n_bins=n_bins, norm="l1")(probs, labels)
    assert top_label_ece(probs, labels, n_bins) == pytest.approx(float(expected), abs=1e-5)


def test_ece_of_a_perfectly_calibrated_bin_is_zero():
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])  # 75 % correct at confidence 0.75
    assert top_label_ece(probs, labels) == pytest.approx(0.0, abs=1e-7)


def test_zero_shot_logits_match_a_direct_computation():
    torch.manual_seed(0)
    model = build_toy_clip().eval()
    data = build_toy_dataset("toy-texture", split_sizes={"test": 2})
    logits, labels = zero_shot_logits(model, data, batch_size=20)
    with torch.no_grad():
        text = model.encode_text(tokenizer()([f"a photo of a {c}." for c in data.classnames]))
        image = model.encode_image(images_to_tensor(render_items(data.test)))
        expected = 50.0 * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    assert logits.shape == (64, 32) and labels.tolist() == [i % 32 for i in range(64)]
    assert torch.allclose(logits, expected, atol=1e-4)


def test_evaluate_zero_shot_reports_fractions_and_restores_mode():
    torch.manual_seed(0)
    model = build_toy_clip().train()
    results = evaluate_zero_shot(model, ["toy-texture"])
    assert set(results) == {"toy-texture"} and model.training
    assert 0.0 <= results["toy-texture"]["accuracy"] <= 1.0 and 0.0 <= results["toy-texture"]["ece"] <= 1
