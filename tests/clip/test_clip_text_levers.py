"""The prompted text encoder's exact levers: the shared prefix computed once, and row chunks recomputed in backward.

Each is compared with the general path of the same backbone (``share_prefixes=False``, no memory budget), which
the backbone tests compare with open_clip's own ``encode_text``: features to 1e-5, prompt gradients to 1e-5
relative (float32 sums of the same terms in another order).
"""

from __future__ import annotations

import math

import pytest
import torch

import calprompt.clip.kernels as kernels
import calprompt.clip.text_plan as text_plan
from calprompt.conventions import DEFAULT_TEXT_MEMORY_MB
from calprompt.data import load_dataset
from calprompt.methods import available_methods, build_method

# Methods whose prompts share [SOS] + context across classes (CoCoOp: across the classes of each image).
SHARED_CONTEXT_METHODS = ("coop", "cocoop", "kgcoop", "prograd", "ivlp", "maple", "promptsrc")
REAL_NAMES = ("tabby cat", "sea or lake", "boeing 737", "apple pie", "daisy", "mountain bike")


def _classnames(backbone_name: str) -> tuple[str, ...]:
    return load_dataset("toy").classnames[:6] if backbone_name == "toy_backbone" else REAL_NAMES


def _output(method, image_features: torch.Tensor):
    """The method's forward pass on frozen image features, or on a fixed random image batch for visual prompts."""
    if method.image_encoder_untouched:
        return method(image_features=image_features)
    size = method.backbone.preprocess.image_size
    images = torch.randn(image_features.shape[0], 3, size, size, generator=torch.Generator().manual_seed(6))
    return method(images.to(image_features.device))


def _pass(method, image_features: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Normalised text features and the gradients of a fixed random linear loss of logits and text features."""
    method.zero_grad(set_to_none=True)
    output = _output(method, image_features)
    generator = torch.Generator().manual_seed(0)
    loss = (output.logits * torch.randn(output.logits.shape, generator=generator)).sum()
    loss = loss + (output.text_features * torch.randn(output.text_features.shape, generator=generator)).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in method.trainable_parameters().items() if p.grad is not None}
    return output.text_features.detach(), grads


def _assert_same(got, want) -> None:
    features, grads = got
    torch.testing.assert_close(features, want[0], rtol=0, atol=1e-5)
    assert grads.keys() == want[1].keys() and grads
    for name, grad in grads.items():
        relative = (grad - want[1][name]).norm() / want[1][name].norm().clamp_min(1e-30)
        assert relative <= 1e-5, (name, float(relative))


class Spy:
    """Counts calls of a function as the text planner calls it (or of a method of one of its classes)."""

    def __init__(self, monkeypatch, name: str, owner: object = text_plan) -> None:
        self.calls, original = 0, getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("backbone_name", ["toy_backbone", "vitb16_backbone"])
@pytest.mark.parametrize("name", [m for m in SHARED_CONTEXT_METHODS if m in available_methods()])
def test_shared_prefix_equals_the_general_encoder(name, backbone_name, request, monkeypatch):
    backbone = request.getfixturevalue(backbone_name)
    torch.manual_seed(0)
    method = build_method(name, backbone, _classnames(backbone_name))
    for parameter in method.trainable_parameters().values():  # away from the initialisation (e.g. zeroed layers)
        parameter.data += 0.02 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1))
    image_features = torch.randn(3, backbone.embed_dim, generator=torch.Generator().manual_seed(2))
    spy = Spy(monkeypatch, "block_after_prefix")
    try:
        backbone.share_prefixes = False
        want = _pass(method, image_features)
        assert spy.calls == 0
        backbone.share_prefixes = True
        got = _pass(method, image_features)
    finally:
        backbone.share_prefixes = None
    assert spy.calls > 0  # the shared-prefix path ran
    _assert_same(got, want)
    method.eval()  # evaluation (no graph) takes it too
    with torch.no_grad():
        backbone.share_prefixes = True
        torch.testing.assert_close(_output(method, image_features).text_features, want[0], rtol=0, atol=1e-5)
        backbone.share_prefixes = None


@pytest.mark.parametrize("options", [{"class_token_position": "middle"}, {"class_token_position": "front"}])
def test_shared_prefix_with_the_class_inside_or_before_the_context(toy_backbone, options):
    method = build_method("coop", toy_backbone, _classnames("toy_backbone"), **options)
    features = torch.randn(4, toy_backbone.embed_dim)
    try:
        toy_backbone.share_prefixes = False
        want = _pass(method, features)
        toy_backbone.share_prefixes = True
        got = _pass(method, features)
    finally:
        toy_backbone.share_prefixes = None
    _assert_same(got, want)


def test_class_specific_context_is_never_treated_as_shared(toy_backbone, monkeypatch):
    # Equal initial values per class, but different parameters: sharing would send every gradient to class 0.
    method = build_method("coop", toy_backbone, _classnames("toy_backbone"), class_specific_context=True)
    spy = Spy(monkeypatch, "block_after_prefix")
    toy_backbone.share_prefixes = True
    try:
        _, grads = _pass(method, torch.randn(4, toy_backbone.embed_dim))
    finally:
        toy_backbone.share_prefixes = None
    assert spy.calls == 0
    assert (grads["ctx"].flatten(1).norm(dim=1) > 0).all()


def test_deep_prompts_across_the_prefix_boundary(toy_backbone):
    """Shared (P, D) deep prompts straddling the prefix end, and per-row (N, P, D) ones that cut the prefix short."""
    method = build_method("coop", toy_backbone, _classnames("toy_backbone"))
    embeddings = method.prompts.assemble(method.ctx)
    ids = method.prompts.ids
    generator = torch.Generator().manual_seed(3)
    width, rows = toy_backbone.text_width, ids.shape[0]
    for shape in [(6, width), (rows, 2, width)]:  # prefix length 5: positions 1..6 cross it
        prompt = torch.randn(shape, generator=generator).requires_grad_()
        results = {}
        for share in (False, True):
            toy_backbone.share_prefixes = share
            prompt.grad = None
            features = toy_backbone.encode_text_embeddings(embeddings, ids, deep_prompts=[None, prompt])
            (features * torch.randn(features.shape, generator=torch.Generator().manual_seed(4))).sum().backward(
                retain_graph=True
            )
            results[share] = (features.detach(), {"prompt": prompt.grad.clone()})
        toy_backbone.share_prefixes = None
        _assert_same(results[True], results[False])


# Class names whose CoOp prompts differ in length (toy: 9 and 10 positions; REAL_NAMES on real CLIP: 8 to 11).
MIXED_LENGTH_TOY_NAMES = ("blue circle", "checkered blue", "red circle", "checkered red")


def _mixed_length_names(backbone_name: str) -> tuple[str, ...]:
    if backbone_name != "toy_backbone":
        return REAL_NAMES
    known = set(load_dataset("toy").classnames) | set(load_dataset("toy-texture").classnames)
    assert set(MIXED_LENGTH_TOY_NAMES) <= known  # words the toy CLIP can spell
    return MIXED_LENGTH_TOY_NAMES


@pytest.mark.parametrize("backbone_name", ["toy_backbone", "vitb16_backbone"])
@pytest.mark.parametrize("name", [m for m in SHARED_CONTEXT_METHODS if m in available_methods()])
def test_length_groups_equal_one_truncated_pass(name, backbone_name, request, monkeypatch):
    """Prompts grouped by length, each group truncated to its own longest: the same features (1e-5) and prompt
    gradients (1e-5 relative) as one pass truncated to the longest prompt of all; CoCoOp's per-image prefix groups
    keep one pass."""
    backbone = request.getfixturevalue(backbone_name)
    names = _mixed_length_names(backbone_name)
    assert len({int(e) for e in backbone.tokenize([f"X X X X {n}." for n in names]).argmax(-1)}) >= 2
    torch.manual_seed(0)
    method = build_method(name, backbone, names)
    for parameter in method.trainable_parameters().values():
        parameter.data += 0.02 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1))
    image_features = torch.randn(3, backbone.embed_dim, generator=torch.Generator().manual_seed(2))
    spy = Spy(monkeypatch, "encode_truncated", text_plan.TextPlanner)
    try:
        backbone.length_buckets = False
        want = _pass(method, image_features)
        one_pass, spy.calls = spy.calls, 0
        backbone.length_buckets = True
        got = _pass(method, image_features)
    finally:
        backbone.length_buckets = None
    if name == "cocoop":
        assert spy.calls == one_pass
    else:
        assert spy.calls > one_pass  # more than one length group ran
    _assert_same(got, want)


def test_length_groups_with_per_row_deep_prompts_and_a_memory_budget(toy_backbone):
    """Per-row (N, P, D) deep prompts are split with their rows, shared (P, D) ones reach every group (a group is
    never shorter than the prompts), and each group is chunked under the memory budget."""
    names = _mixed_length_names("toy_backbone")
    method = build_method("coop", toy_backbone, names)
    embeddings = method.prompts.assemble(method.ctx)
    ids = method.prompts.ids
    generator = torch.Generator().manual_seed(3)
    width, rows = toy_backbone.text_width, ids.shape[0]
    shortest = int(ids.argmax(-1).min())
    for shape in [(shortest + 1, width), (rows, 2, width)]:  # the shared one ends past the shortest prompt's end
        prompt = torch.randn(shape, generator=generator).requires_grad_()
        results = {}
        for buckets, budget in ((False, math.inf), (True, math.inf), (True, 0.01)):
            toy_backbone.length_buckets, toy_backbone.text_memory_budget_mb = buckets, budget
            prompt.grad = None
            features = toy_backbone.encode_text_embeddings(embeddings, ids, deep_prompts=[None, prompt])
            (features * torch.randn(features.shape, generator=torch.Generator().manual_seed(4))).sum().backward(
                retain_graph=True
            )
            results[(buckets, budget)] = (features.detach(), {"prompt": prompt.grad.clone()})
        toy_backbone.length_buckets, toy_backbone.text_memory_budget_mb = None, DEFAULT_TEXT_MEMORY_MB
        reference = results.pop((False, math.inf))
        for result in results.values():
            _assert_same(result, reference)


def test_length_groups_are_chosen_where_they_save_work(toy_backbone, vitb16_backbone):
    """Automatic grouping: never on the toy tower (an extra group costs more than it saves there), and on ViT-B-16
    for 200 prompts of one to four words (about 1.6x faster there); every row in exactly one group, each group's
    length its longest prompt's."""
    ids = toy_backbone.tokenize([f"X X X X {n}." for n in _mixed_length_names("toy_backbone")])
    assert toy_backbone.text_planner().length_groups(toy_backbone.eot_positions(ids), None, 1) is None
    words = ("tabby", "cat", "sea", "lake", "boeing", "apple", "pie", "daisy", "mountain", "bike")
    generator = torch.Generator().manual_seed(0)
    names = [
        " ".join(
            words[i]
            for i in torch.randint(
                0, len(words), (int(torch.randint(1, 5, (1,), generator=generator)),), generator=generator
            ).tolist()
        )
        for _ in range(200)
    ]
    eot = vitb16_backbone.eot_positions(vitb16_backbone.tokenize([f"X X X X {n}." for n in names]))
    groups = vitb16_backbone.text_planner().length_groups(eot, None, 1)
    assert groups is not None and len(groups) >= 2
    rows = torch.cat([index for index, _ in groups])
    assert sorted(rows.tolist()) == list(range(200))
    for index, length in groups:
        assert length == int(eot[index].max()) + 1


def test_an_in_place_change_voids_the_mark(toy_backbone):
    method = build_method("coop", toy_backbone, _classnames("toy_backbone"))
    with torch.no_grad():
        embeddings = method.prompts.assemble(method.ctx)
        assert text_plan.marked_shared_prefix(embeddings) is not None
        assert text_plan.marked_shared_prefix(embeddings.reshape(1, *embeddings.shape)) is not None
        assert text_plan.marked_shared_prefix(embeddings[1:]) is None
        embeddings[1, 2] += 1.0  # class 1's context now differs
        assert text_plan.marked_shared_prefix(embeddings) is None


@pytest.mark.parametrize(
    ("name", "options"),
    [("coop", {}), ("coop", {"class_specific_context": True}), ("cocoop", {})],
)
def test_chunked_pass_under_a_memory_budget_equals_the_whole_pass(toy_backbone, monkeypatch, name, options):
    if name not in available_methods():
        pytest.skip(f"{name} is not registered")
    torch.manual_seed(0)
    method = build_method(name, toy_backbone, load_dataset("toy").classnames[:12], **options)
    features = torch.randn(3, toy_backbone.embed_dim, generator=torch.Generator().manual_seed(5))
    spy = Spy(monkeypatch, "__call__", text_plan._RowEncoder)  # one call per chunk, forward and backward
    toy_backbone.share_prefixes = True
    try:
        toy_backbone.text_memory_budget_mb = math.inf
        want = _pass(method, features)
        whole_calls, spy.calls = spy.calls, 0
        toy_backbone.text_memory_budget_mb = 0.05  # a few rows per chunk
        got = _pass(method, features)
    finally:
        toy_backbone.text_memory_budget_mb = DEFAULT_TEXT_MEMORY_MB
        toy_backbone.share_prefixes = None
    assert spy.calls >= 3 * whole_calls * 2  # at least 3 chunks, each encoded in forward and again in backward
    _assert_same(got, want)


@pytest.mark.parametrize("backbone_name", ["tiny_backbone", "vitb16_backbone", "toy_backbone"])
def test_direct_attention_block_equals_open_clip_block(backbone_name, request):
    """The text blocks run through `plain_block_forward` (fewer dispatches): same outputs and input gradients as
    open_clip's block with its causal mask, to float32 rounding of the same sums."""
    backbone = request.getfixturevalue(backbone_name)
    block = backbone.model.transformer.resblocks[0]
    assert kernels.plain_block(block)
    length = 9
    mask = backbone.model.attn_mask[:length, :length]
    x = torch.randn(3, length, backbone.text_width, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    outputs, grads = [], []
    for forward in (lambda t: block(t, attn_mask=mask), lambda t: kernels.plain_block_forward(block, t, mask)):
        leaf = x.clone().requires_grad_(True)
        out = forward(leaf)
        out.pow(2).sum().backward()
        outputs.append(out.detach())
        grads.append(leaf.grad)
    scale = outputs[0].abs().max().item()
    assert (outputs[1] - outputs[0]).abs().max().item() <= 1e-6 * max(scale, 1.0)
    assert (grads[1] - grads[0]).norm().item() <= 1e-5 * grads[0].norm().item()


def test_blocks_with_attention_dropout_keep_open_clips_path(tiny_backbone):
    """Dropout inside the attention is not reproduced by `_attend`: such blocks are not plain."""
    block = tiny_backbone.model.transformer.resblocks[0]
    original = block.attn.dropout
    try:
        block.attn.dropout = 0.1
        assert not kernels.plain_block(block)
    finally:
        block.attn.dropout = original


def test_text_features_and_gradients_do_not_depend_on_the_thread_count(tiny_backbone):
    """A run resumed in a process with another thread count must continue bit for bit: the prompted text pass
    (the last block at the end-of-text rows included) gives the same bits on one thread and on two."""
    backbone = tiny_backbone
    long = "a photo of a very long class name with many words in it, seen from far away on a grey day."
    ids = backbone.tokenize([f"a photo of a {name}." for name in REAL_NAMES] * 4 + [long])  # 25 positions kept
    embeddings = backbone.embed_tokens(ids)

    def compute() -> list[torch.Tensor]:
        leaf = embeddings.clone().requires_grad_(True)
        features = backbone.encode_text_embeddings(leaf, ids)
        return [features.detach(), *torch.autograd.grad(features.square().sum(), leaf)]

    one, two = _on_one_and_two_threads(compute)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_image_features_and_gradients_do_not_depend_on_the_thread_count(toy_backbone):
    """The feature cache of a resumed run is rebuilt in whatever process resumes it, and visual prompts train
    there: the image path (its last block at the class token included) gives the same features, and the same
    visual-prompt gradients, on one thread and on two."""
    generator = torch.Generator().manual_seed(8)
    images = torch.randn(32, 3, 32, 32, generator=generator)
    prompts = [torch.randn(4, toy_backbone.vision_width, generator=generator) * 0.1 for _ in range(2)]
    weights = torch.randn(32, toy_backbone.embed_dim, generator=generator)

    def compute() -> list[torch.Tensor]:
        with torch.no_grad():
            plain = toy_backbone.encode_image(images)
        leaves = [p.clone().requires_grad_(True) for p in prompts]
        prompted = toy_backbone.encode_image(images, prompts=leaves[0], deep_prompts=[None, leaves[1]])
        return [plain, prompted.detach(), *torch.autograd.grad((prompted * weights).sum(), leaves)]

    one, two = _on_one_and_two_threads(compute)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def _on_one_and_two_threads(compute):
    """``compute()`` on one thread, then on two; torch's thread count is restored afterwards."""
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(compute())
        return results
    finally:
        torch.set_num_threads(threads)
