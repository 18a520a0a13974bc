"""Visual prompt tokens inside timm image towers (SigLIP's attention-pooled ViT, EVA-02 with rotary attention), on
small random-init models: zero prompts reproduce open_clip's ``encode_image``; with prompts the features equal a
hand-written pass over timm's modules (attention re-typed: prompts appended after the position embedding,
unrotated in EVA's rotary attention, dropped before the final norm and pooling), and gradients reach the prompts."""

from __future__ import annotations

import pytest
import torch
from timm.layers.pos_embed_sincos import apply_rot_embed_cat

from calprompt.clip import load_clip
from calprompt.methods import build_method
from tests.tiny_models import eva_style_cfg, save_open_clip_dir, siglip_style_cfg

CLASSES = ["red circle", "blue square", "cat"]
PROMPTS = 3


@pytest.fixture(scope="module", params=["siglip", "eva"])
def tower(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "model"
    cfg = siglip_style_cfg() if request.param == "siglip" else eva_style_cfg()
    model = save_open_clip_dir(folder, cfg, seed=5)
    return request.param, model, load_clip(f"local-dir:{folder}")


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _prompts(backbone, count: int) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    generator = torch.Generator().manual_seed(1)
    shallow = 5 * torch.randn(count, backbone.vision_width, generator=generator)
    deep = [None, torch.randn(count, backbone.vision_width, generator=generator)]
    return shallow, deep


def _attention(attn, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
    """Multi-head self-attention of a timm ``Attention`` / ``EvaAttention``, re-typed; rotary embedding on the
    patch tokens only (the prefix tokens before them and the prompts after them keep their vectors)."""
    batch, n, width = x.shape
    heads = attn.num_heads
    if getattr(attn, "qkv", None) is not None:
        q, k, v = attn.qkv(x).reshape(batch, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    else:
        q, k, v = (
            proj(x).reshape(batch, n, heads, -1).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
    q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        start, end = attn.num_prefix_tokens, attn.num_prefix_tokens + rope.shape[0]
        q, k = (
            torch.cat([t[:, :, :start], apply_rot_embed_cat(t[:, :, start:end], rope), t[:, :, end:]], dim=2)
            for t in (q, k)
        )
    weights = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1)
    return attn.proj(attn.norm((weights @ v).transpose(1, 2).reshape(batch, n, width)))


def _block(block, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
    if type(block).__name__ == "EvaBlock":
        gamma_1 = block.gamma_1 if block.gamma_1 is not None else 1.0
        gamma_2 = block.gamma_2 if block.gamma_2 is not None else 1.0
        x = x + gamma_1 * _attention(block.attn, block.norm1(x), rope)
        return x + gamma_2 * block.mlp(block.norm2(x))
    x = x + block.ls1(_attention(block.attn, block.norm1(x), None))
    return x + block.ls2(block.mlp(block.norm2(x)))


def _oracle(model, images: torch.Tensor, shallow: torch.Tensor, deep: list) -> torch.Tensor:
    trunk = model.visual.trunk
    x = trunk.patch_embed(images)
    rope = None
    if type(trunk).__name__ == "Eva":
        x, rope = trunk._pos_embed(x)
    else:
        x = trunk._pos_embed(x)
    tokens = x.shape[1]
    x = trunk.norm_pre(torch.cat([x, shallow.expand(x.shape[0], -1, -1)], dim=1))
    for index, block in enumerate(trunk.blocks):
        if index < len(deep) and deep[index] is not None:
            x = torch.cat([x[:, :tokens], deep[index].expand(x.shape[0], -1, -1)], dim=1)
        x = _block(block, x, rope)
    x = trunk.norm(x[:, :tokens])
    pooled = trunk.attn_pool(x) if trunk.attn_pool is not None else x[:, 0]
    assert trunk.attn_pool is not None or trunk.global_pool == "token"  # the two poolings re-typed here
    return model.visual.head(trunk.head(trunk.fc_norm(pooled)))


def test_family_hosts_visual_prompts(tower):
    _, model, backbone = tower
    assert backbone.family.visual_prompts and backbone.vision_layers == len(model.visual.trunk.blocks) == 2


def test_zero_prompts_equal_open_clips_encode_image(tower):
    _, model, backbone = tower
    shallow, deep = _prompts(backbone, 0)
    with torch.no_grad():
        ours = backbone.encode_image(_images(), prompts=shallow, deep_prompts=deep)
        torch.testing.assert_close(ours, model.encode_image(_images()), rtol=0, atol=1e-6)


def test_prompted_features_equal_a_hand_written_pass_and_reach_the_prompts(tower):
    _, model, backbone = tower
    shallow, deep = _prompts(backbone, PROMPTS)
    shallow.requires_grad_(True)
    deep[1].requires_grad_(True)
    ours = backbone.encode_image(_images(), prompts=shallow, deep_prompts=deep)
    with torch.no_grad():
        oracle = _oracle(model, _images(), shallow, deep)
        plain = model.encode_image(_images())
    torch.testing.assert_close(ours.detach(), oracle, rtol=0, atol=1e-5)
    assert (ours.detach() - plain).abs().max() > 1e-4  # the prompts change the feature far beyond the tolerance
    ours.square().sum().backward()
    assert shallow.grad.abs().sum() > 0 and deep[1].grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["vpt", "maple"])
def test_visual_prompt_methods_build_and_backpropagate(tower, method):
    _, _, backbone = tower
    torch.manual_seed(0)
    built = build_method(method, backbone, CLASSES)
    output = built(_images())
    output.logits.logsumexp(-1).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in built.parameters() if p.requires_grad)
