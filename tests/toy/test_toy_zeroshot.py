"""Zero-shot helpers: logits against a hand-built reference, reports in fractions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calprompt.toy.downstream import build_toy_dataset, render_items
from calprompt.toy.model import build_toy_clip, images_to_tensor
from calprompt.toy.vocab import tokenizer
from calprompt.toy.zeroshot import evaluate_zero_shot, zero_shot_logits


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
