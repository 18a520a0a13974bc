"""ProDA against a re-typed oracle of the DAC repository's code (trainers/classification/proda.py).

The context of each prompt is set to the token embeddings of a real 4-token phrase, so each prompt (class at the end,
in the middle or at the front, or no class) is a plain sentence that open_clip's own text encoder reads: the oracle
never touches calprompt's prompt assembly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from calprompt.methods import build_method
from calprompt.methods.proda import prompt_distribution, prompt_orthogonality, prompt_positions
from calprompt.methods.text_prompts import context_from_phrase

NAMES = ["dog", "golden retriever", "sea or lake"]
PHRASES = [
    "a photo of a",
    "a picture of the",
    "an image of one",
    "a drawing of a",
    "a sketch of the",
    "a painting of a",
    "a render of the",
    "a cropped photo of",
]


def dac_proda_loss(image_features, text_features, nc_text_features, label, logit_scale, n_class):
    """Re-typed from CustomCLIP.forward (training branch) of the DAC repository: (loss_upper, loss_m).

    ``text_features`` (C * K, E) class-major and normalised, ``nc_text_features`` (P, E) normalised."""
    n_prompt = text_features.shape[0] // n_class
    text_features = text_features.view(n_class, n_prompt, -1)
    text_mean = text_features.mean(dim=1)
    logits = logit_scale * image_features @ text_mean.t()
    batch_size = label.shape[0]
    text_features = text_features - text_mean.unsqueeze(1)
    diag_cov_martix = text_features.permute(2, 0, 1) @ text_features.permute(2, 1, 0)
    diag_cov_martix /= n_prompt + 1
    refined_logits = torch.einsum("bd, dik -> bik", [image_features**2, diag_cov_martix])
    sigma = (
        refined_logits[torch.arange(batch_size), label, label].unsqueeze(-1)
        + refined_logits[:, torch.arange(n_class), torch.arange(n_class)]
        - 2 * refined_logits[torch.arange(batch_size), label, :]
    )
    logits += 0.5 * (logit_scale**2) * sigma.view(-1, n_class)
    loss_upper = F.cross_entropy(logits, label)
    dis = nc_text_features @ nc_text_features.permute(1, 0)
    n_prompts = nc_text_features.shape[0]
    loss_m = dis[~torch.eye(n_prompts, dtype=torch.bool)].abs().mean()
    return loss_upper, loss_m


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


@pytest.mark.parametrize(("classes", "prompts", "batch"), [(5, 4, 7), (3, 1, 2), (2, 8, 5)])
def test_prompt_distribution_terms_equal_the_public_loss(classes, prompts, batch):
    """float64: CE(z) + our gap = DAC's loss_upper, our orthogonality = its loss_m, on random unit features."""
    image = _unit(batch, 16, seed=1)
    text = _unit(classes, prompts, 16, seed=2)  # (C, K, E)
    free = _unit(6, 16, seed=3)
    labels = torch.randint(classes, (batch,), generator=torch.Generator().manual_seed(4))
    scale = 100.0
    upper, loss_m = dac_proda_loss(image, text.reshape(-1, 16), free, labels, scale, classes)
    z = scale * image @ text.mean(dim=1).t()
    ours = F.cross_entropy(z, labels) + prompt_distribution(z, image, text, labels, scale)
    assert abs(float(ours - upper)) <= 1e-10 * max(1.0, float(upper.abs()))
    assert abs(float(prompt_orthogonality(free) - loss_m)) <= 1e-14


def _method_with_phrases(backbone):
    torch.manual_seed(0)
    method = build_method("proda", backbone, NAMES, n_ctx=4, n_prompts=8, prompt_batch_size=4)
    with torch.no_grad():
        for p, phrase in enumerate(PHRASES):
            assert len(backbone.tokenizer.encode(phrase)) == 4, phrase
            method.ctx[p] = context_from_phrase(backbone, phrase)
    return method


def _sentence(phrase: str, name: str, position: str) -> str:
    words = phrase.split()
    if position == "end":
        return f"{phrase} {name}."
    if position == "front":
        return f"{name} {phrase}."
    return f"{' '.join(words[:2])} {name} {' '.join(words[2:])}."  # middle: half the context, the class, the rest


def _open_clip_text(backbone, sentences):
    with torch.no_grad():
        return F.normalize(backbone.model.encode_text(backbone.tokenize(sentences)).double(), dim=-1)


def test_training_step_equals_the_public_loss_on_open_clips_encoder(tiny_backbone):
    method = _method_with_phrases(tiny_backbone)
    positions = prompt_positions(8)
    assert positions == ["front"] * 2 + ["middle"] * 2 + ["end"] * 4  # the public code's quarters
    method.train()
    method.on_step_start(0, 1)  # the second batch of the first cycle
    active = method._active.tolist()
    image = _unit(5, tiny_backbone.embed_dim, seed=7).float()
    labels = torch.tensor([0, 2, 1, 1, 0])
    output = method(image_features=image)
    terms = method.losses({"logits": output.logits, "labels": labels, "image_features": output.image_features})
    ours = F.cross_entropy(output.logits, labels) + sum(weight * value for weight, value in terms.values())

    texts = torch.stack(
        [_open_clip_text(tiny_backbone, [_sentence(PHRASES[p], n, positions[p]) for p in active]) for n in NAMES]
    )  # (C, K, E), class-major as the public code views it
    free = _open_clip_text(tiny_backbone, [f"{phrase}." for phrase in PHRASES])
    scale = float(tiny_backbone.logit_scale)
    upper, loss_m = dac_proda_loss(image.double(), texts.reshape(-1, texts.shape[-1]), free, labels, scale, 3)
    expected = upper + 0.1 * loss_m
    assert abs(float(ours.detach()) - float(expected)) <= 1e-4 * max(1.0, float(expected))
    # The logits are s f mu^T with the unnormalised mean of the batch's prompts.
    torch.testing.assert_close(output.logits.double(), scale * image.double() @ texts.mean(1).t(), rtol=1e-4, atol=1e-4)


def test_evaluation_averages_every_prompt(tiny_backbone):
    """As the public code's set_classifier: the mean of all prompts' normalised features, not renormalised."""
    method = _method_with_phrases(tiny_backbone).eval()
    method.on_step_start(0, 0)  # ignored outside training
    image = _unit(4, tiny_backbone.embed_dim, seed=8).float()
    with torch.no_grad():
        logits = method(image_features=image).logits
    positions = prompt_positions(8)
    texts = torch.stack(
        [
            _open_clip_text(tiny_backbone, [_sentence(p, n, pos) for p, pos in zip(PHRASES, positions, strict=True)])
            for n in NAMES
        ]
    )
    expected = float(tiny_backbone.logit_scale) * image.double() @ texts.mean(1).t()
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-4)


def test_prompt_batches_cover_every_prompt_once_per_cycle(tiny_backbone):
    torch.manual_seed(0)
    method = build_method("proda", tiny_backbone, NAMES).train()  # 32 prompts, batches of 4: cycles of 8 steps

    def batches(epoch, steps):
        out = []
        for step in steps:
            method.on_step_start(epoch, step)
            out.append(method._active.tolist())
        return out

    cycle = batches(0, range(8))
    assert sorted(i for batch in cycle for i in batch) == list(range(32))
    assert batches(0, range(8)) == cycle  # a resumed run repeats them
    assert batches(0, range(8, 16)) != cycle and batches(1, range(8)) != cycle


def test_proda_vitb16_parameter_count(vitb16_backbone):
    """The public code's ``ctx = empty(N_PROMPT, N_CTX, ctx_dim)``: 32 x 16 x 512 on ViT-B/16."""
    method = build_method("proda", vitb16_backbone, NAMES)
    assert method.num_trainable_parameters() == 32 * 16 * 512 == 262_144


def test_prompt_batch_size_must_divide_the_prompts(tiny_backbone):
    with pytest.raises(ValueError, match=r"prompt_batch_size.*divisor of n_prompts=32"):
        build_method("proda", tiny_backbone, NAMES, prompt_batch_size=5)
