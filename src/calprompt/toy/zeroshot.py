"""Zero-shot accuracy and ECE of a CLIP model on the toy datasets (what pretraining reports as it goes).

Kept self-contained (plain argmax accuracy, top-label ECE with equal-width bins) so that the toy world does not
depend on the metrics package; the full evaluation goes through `calprompt.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from calprompt._validation import check_positive_int
from calprompt.data.items import DatasetSplits
from calprompt.toy.downstream import TOY_DATASETS, build_toy_dataset, render_items
from calprompt.toy.model import images_to_tensor
from calprompt.toy.vocab import tokenizer


def top_label_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error of the top label; bins (lo, hi] of equal width, a confidence of 0 in the first."""
    check_positive_int(n_bins, "n_bins")
    confidence, prediction = probs.max(dim=1)
    correct = (prediction == labels).float()
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)  # (N,) bin index
    count = torch.zeros(n_bins).index_add_(0, bins, torch.ones_like(confidence))
    gap = torch.zeros(n_bins).index_add_(0, bins, confidence - correct)  # summed (conf - acc) per bin
    return float(gap.abs().sum() / count.sum())


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
            "ece": top_label_ece(probs, labels),
        }
    model.train(was_training)
    return results
