"""What `calprompt sweep --dry-run` reports missing on disk: data folders and weights, without loading anything."""

from __future__ import annotations

from typer.testing import CliRunner

from calprompt.cli import app
from calprompt.experiments.config import has_recipe
from calprompt.experiments.settings import missing_data, missing_weights
from calprompt.methods import available_methods


def test_missing_data_names_the_root_or_the_exact_paths(tmp_path):
    assert missing_data("toy", None) == []  # rendered: no files
    assert "no data root" in missing_data("oxford_pets", None)[0]
    assert "does not exist" in missing_data("oxford_pets", str(tmp_path / "nowhere"))[0]
    problems = missing_data("oxford_pets", str(tmp_path))
    assert problems and all(str(tmp_path / "oxford_pets") in p for p in problems)


def test_missing_weights_says_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty Hugging Face cache
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    problem = missing_weights("ViT-B-16", "openai")
    assert problem and "hf download timm/vit_base_patch16_clip_224.openai" in problem
    assert "no pretrained weights tagged" in missing_weights("ViT-B-16", "no-such-tag")
    assert "does not exist" in missing_weights("toy", str(tmp_path / "toy.safetensors"))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    assert missing_weights("toy", str(weights)) is None and missing_weights("ViT-B-16", None) is None


def test_dry_run_of_the_paper_grid_lists_runs_and_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    args = ["sweep", "paper-base2novel", "--store", str(tmp_path / "store"), "--set", f"root={tmp_path}", "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    trained = [m for m in available_methods() if m != "zeroshot" and has_recipe("paper", m, "dtd")]
    n_runs = 11 * 3 * (7 * len(trained) + 1)  # datasets x seeds x (methods x calibrations + zero-shot)
    assert f"{n_runs} runs, 0 finished" in result.output
    assert result.output.count(" to run ") == n_runs
    assert "Missing on disk:" in result.output and f"dtd: missing {tmp_path / 'dtd'}" in result.output
    assert not (tmp_path / "store").exists()  # a dry run writes nothing
