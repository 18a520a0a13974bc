"""Zero-shot accuracy and ECE of a CLIP model on the toy datasets (what pretraining reports as it goes).

ECE: `calprompt.metrics.expected_calibration_error` with 15 equal-width bins.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from calprompt.data.items import DatasetSplits
from calprompt.metrics import expected_calibration_error
from calprompt.toy.downstream import TOY_DATASETS, build_toy_dataset, render_items
from calprompt.toy.model import images_to_tensor
from calprompt.toy.vocab import tokenizer


@torch.no_grad()
def zero_shot_logits(
    model: torch.nn.Module, splits: DatasetSplits, split: str = "test", batch_size: int = 512, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) of `model` with the dataset's template on one split, and the labels (N,)."""
    items = getattr(splits, split)
    prompts = [splits.template.format(name) for name in splits.classnames]
    text = F.normalize(model.encode_text(tokenizer()(prompts).to(device)), dim=-1)  # (C, D)
    chunks = []
    for start in range(0, len(items), batch_size):
        images = images_to_tensor(render_items(items[start : start + batch_size])).to(device)
        chunks.append(F.normalize(model.encode_image(images), dim=-1) @ text.T)  # (B, C)
    logits = model.logit_scale.exp() * torch.cat(chunks)
    labels = torch.tensor([item.label for item in items], device=device)
    return logits.float().cpu(), labels.cpu()


def evaluate_zero_shot(
    model: torch.nn.Module, datasets: Iterable[str] = TOY_DATASETS, seed: int = 0, device: str = "cpu"
) -> dict[str, dict[str, float]]:
    """Test-split zero-shot accuracy and ECE (both in [0, 1]) of each toy dataset."""
    was_training = model.training
    model.eval()
    results = {}
    for name in datasets:
        logits, labels = zero_shot_logits(model, build_toy_dataset(name, seed=seed), device=device)
        probs = logits.softmax(dim=1)
        results[name] = {
            "accuracy": float((probs.argmax(dim=1) == labels).float().mean()),
            "ece": float(expected_calibration_error(probs, labels, n_bins=15)),
        }
    model.train(was_training)
    return results
