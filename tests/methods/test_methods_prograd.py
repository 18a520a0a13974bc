"""ProGrad: the projection rule on constructed gradients, the student's initial context, the update in the loop."""

from __future__ import annotations

import torch

from calprompt.methods import build_method
from calprompt.methods.prograd import distillation_loss, project_conflicting
from calprompt.methods.text_prompts import context_from_phrase

NAMES = ["dog", "golden retriever", "sea or lake", "x"]


def _vectors(*rows):
    return [torch.tensor(r, dtype=torch.float64) for r in rows]


def test_conflicting_gradient_is_made_orthogonal_to_the_general_direction():
    g, g_kl = _vectors([1.0, -2.0, 0.5], [-1.0, 1.0, 0.0])
    assert (g @ g_kl) < 0
    projected = project_conflicting(g, g_kl, 1.0)
    assert abs((projected @ g_kl).item()) <= 1e-15
    expected = g - (g @ g_kl) / (g_kl @ g_kl) * g_kl
    torch.testing.assert_close(projected, expected)
    half = project_conflicting(g, g_kl, 0.5)  # lambda = 0.5 removes half of the conflicting component
    torch.testing.assert_close(half @ g_kl, 0.5 * (g @ g_kl))


def test_aligned_or_zero_general_gradient_leaves_it_unchanged():
    g, aligned, zero = _vectors([1.0, -2.0, 0.5], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0])
    assert torch.equal(project_conflicting(g, aligned), g)
    result = project_conflicting(g, zero)
    assert torch.equal(result, g) and torch.isfinite(result).all()
    matrix = torch.randn(3, 4)
    assert torch.equal(project_conflicting(matrix, -matrix * 0), matrix)


def test_projection_is_per_parameter_tensor_in_the_update(tiny_backbone):
    """A step's gradient equals project_conflicting(grad CE, grad KL) computed by hand."""
    torch.manual_seed(0)
    method = build_method("prograd", tiny_backbone, NAMES)
    features = torch.nn.functional.normalize(torch.randn(6, tiny_backbone.embed_dim), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    teacher = torch.randn(6, len(NAMES)) * 5

    def losses():
        logits = method(image_features=features).logits
        ce = torch.nn.functional.cross_entropy(logits, labels)
        return ce, method.losses({"logits": logits, "zs_logits": teacher})

    ce, terms = losses()
    assert terms["kl"][0] == 0.0  # logged, not added to the loss
    method.backward(ce, terms, lambda value: value)
    (g,) = torch.autograd.grad(losses()[0], method.ctx)
    (g_kl,) = torch.autograd.grad(losses()[1]["kl"][1], method.ctx)
    torch.testing.assert_close(method.ctx.grad, project_conflicting(g, g_kl), rtol=1e-5, atol=1e-8)


def test_distillation_loss_is_the_kl_up_to_the_teacher_entropy():
    logits, teacher = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    p = teacher.softmax(-1)
    kl = torch.nn.functional.kl_div(logits.log_softmax(-1), p, reduction="batchmean")
    entropy = -(p * p.log()).sum(-1).mean()
    torch.testing.assert_close(distillation_loss(logits, teacher), kl + entropy)


def test_student_context_is_zeros_then_the_template_phrase(tiny_backbone):
    method = build_method("prograd", tiny_backbone, NAMES)
    phrase = context_from_phrase(tiny_backbone, "a photo of a")
    assert method.ctx.shape == (16, tiny_backbone.text_width)
    assert torch.equal(method.ctx[12:].detach(), phrase) and not method.ctx[:12].any()
    assert method.needs == {"zs_logits"}
    assert build_method("prograd", tiny_backbone, NAMES, teacher_template="a type of pet, a photo of a {}.").needs == {
        "zs_image_features"
    }


# The public ProGrad code's templates (BeierZhu/Prompt-align, trainers/prograd.py, CUSTOM_TEMPLATES), by calprompt's
# dataset names: the student's context starts from the template with " {}." removed.
PUBLIC_TEMPLATES = {
    "oxford_pets": "a type of pet, a photo of a {}.",
    "oxford_flowers": "a type of flower, a photo of a {}.",
    "fgvc_aircraft": "a type of aircraft, a photo of a {}.",
    "dtd": "a texture of {}.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a type of food, a photo of {}.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
}


def public_initial_context(backbone, template: str, n_ctx: int = 16) -> tuple[torch.Tensor, torch.Tensor, int]:
    """ProGrad's PromptLearner, re-typed: it counts *words* (``len(ctx_init.split(" "))``), puts the first that many
    token embeddings in the last rows of zeros, and tokenizes ``"X ... X " + ctx_init`` so that the frozen suffix
    starts at token ``1 + n_ctx``. Returns (context, the suffix's first token embedding, word count)."""
    ctx_init = template.replace(" {}.", "").replace("_", " ")
    words = len(ctx_init.split(" "))
    with torch.no_grad():
        embedding = backbone.embed_tokens(backbone.tokenize(ctx_init)).float()
        context = torch.zeros(n_ctx, backbone.text_width)
        context[n_ctx - words :, :] = embedding[0, 1 : 1 + words, :]
        prompt = " ".join(["X"] * (n_ctx - words)) + f" {ctx_init} dog."
        suffix_first = backbone.embed_tokens(backbone.tokenize(prompt)).float()[0, 1 + n_ctx]
    return context, suffix_first, words


def test_initial_context_follows_the_public_code_on_every_dataset(tiny_backbone):
    from calprompt.experiments.config import resolve_recipe

    commas = []
    for dataset, template in PUBLIC_TEMPLATES.items():
        options = resolve_recipe("paper", "prograd", dataset).options
        method = build_method("prograd", tiny_backbone, NAMES, **options)
        assert method.config.ctx_init == template.replace(" {}.", ""), dataset  # the recipe holds the public phrase
        ours = method.ctx.detach().float()
        public, suffix_first, words = public_initial_context(tiny_backbone, template)
        tokens = len(tiny_backbone.tokenizer.encode(method.config.ctx_init))
        if tokens == words:  # no punctuation: the very same 16 vectors
            torch.testing.assert_close(ours, public, rtol=0, atol=0)
            continue
        # A comma is a token but not a word: the public code keeps `words` tokens in its context and the phrase's
        # last token lands in its frozen suffix; calprompt keeps the whole phrase in the context (one zero row fewer).
        commas.append(dataset)
        assert tokens == words + 1
        torch.testing.assert_close(ours[16 - tokens : -1], public[16 - words :], rtol=0, atol=0)
        torch.testing.assert_close(ours[-1], suffix_first, rtol=0, atol=0)
        assert not ours[: 16 - tokens].any() and not public[: 16 - words].any()
    assert sorted(commas) == ["fgvc_aircraft", "food101", "oxford_flowers", "oxford_pets"]


def test_imagenet_recipe_is_fifty_epochs_as_in_the_public_readme():
    from calprompt.experiments.config import resolve_recipe

    assert resolve_recipe("paper", "prograd", "imagenet").epochs == 50
    assert {resolve_recipe("paper", "prograd", d).epochs for d in PUBLIC_TEMPLATES if d != "imagenet"} == {100}
