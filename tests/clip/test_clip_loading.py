"""Loading backbones: local files, local dirs, TorchScript refusal, QuickGELU rules, clear offline errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from calprompt.clip import WeightsNotFoundError, load_clip
from tests.tiny_models import TINY_CLIP_CFG, make_tiny_clip

ARCH = "calprompt-test-tiny"


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """Register the tiny config as an open_clip architecture, as users do with add_model_config."""
    folder = tmp_path_factory.mktemp("configs")
    (folder / f"{ARCH}.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(folder / f"{ARCH}.json")
    return ARCH


def _features(backbone):
    ids = backbone.tokenize(["a photo of a dog.", "a photo of a cat."])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return backbone.encode_text(ids), backbone.encode_image(images)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_file(tiny_arch, tmp_path, suffix):
    source = make_tiny_clip(seed=7)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    backbone = load_clip(tiny_arch, str(path))
    text, image = _features(backbone)
    with torch.no_grad():
        ids = backbone.tokenize(["a photo of a dog.", "a photo of a cat."])
        assert torch.allclose(text, source.encode_text(ids), atol=1e-5)
        images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(image, source.encode_image(images), atol=1e-5)
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone.pretrained == str(path)


def test_local_dir(tmp_path):
    source = make_tiny_clip(seed=8)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "open_clip_model.safetensors")
    backbone = load_clip(f"local-dir:{tmp_path}")
    ids = backbone.tokenize(["a photo of a dog."])
    with torch.no_grad():
        assert torch.allclose(backbone.encode_text(ids), source.encode_text(ids), atol=1e-5)


def test_local_dir_without_config_names_the_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "open_clip_config.json")):
        load_clip(f"local-dir:{tmp_path}")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_archive_needs_trust(tiny_arch, tmp_path):
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(PermissionError, match="trust_torchscript"):
        load_clip(tiny_arch, str(path))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_plain_state_dict_is_not_mistaken_for_torchscript(tmp_path):
    from calprompt.clip.loading import _is_torchscript_archive

    path = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, path)
    assert not _is_torchscript_archive(path)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    assert _is_torchscript_archive(scripted)


def test_openai_tag_forces_quick_gelu(monkeypatch):
    captured = {}

    def fake_create_model(name, **kwargs):
        captured.update(kwargs, name=name)
        raise RuntimeError("no network")

    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    with pytest.raises(WeightsNotFoundError):
        load_clip("ViT-B-16", "openai")
    assert captured["force_quick_gelu"] is True and captured["pretrained"] == "openai"
    with pytest.raises(ValueError, match="quick_gelu"):
        load_clip("ViT-B-16", "openai", quick_gelu=False)


def test_unknown_names_and_tags():
    with pytest.raises(ValueError, match="ViT-B-16"):
        load_clip("ViT-B-61")
    with pytest.raises(WeightsNotFoundError, match="laion2b_s34b_b88k"):
        load_clip("ViT-B-16", "no-such-tag")
    with pytest.raises(ValueError, match="precision"):
        load_clip("ViT-B-16", precision="fp8")


def test_offline_openai_fails_fast_with_clear_message():
    """With HF_HUB_OFFLINE=1 the hub is never contacted: the error comes in seconds and says how to fix it."""
    script = textwrap.dedent(
        """
        import time
        from calprompt.clip import load_clip, WeightsNotFoundError
        start = time.perf_counter()
        try:
            load_clip("ViT-B-16", "openai")
        except WeightsNotFoundError as error:
            print(f"ELAPSED {time.perf_counter() - start:.2f}")
            print(error)
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    out = result.stdout
    assert "ELAPSED" in out, result.stderr[-2000:]
    elapsed = float(out.split("ELAPSED ")[1].split()[0])
    assert elapsed < 10.0
    assert "ViT-B-16" in out and "openai" in out  # what was asked
    assert "timm/vit_base_patch16_clip_224.openai" in out  # where it looked
    assert "hf download" in out and "--pretrained" in out and "HF_HUB_OFFLINE" in out  # how to fix
