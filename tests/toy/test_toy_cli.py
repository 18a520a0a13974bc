"""`calprompt toy pretrain`: the thin command runs a tiny pretraining end to end."""

from __future__ import annotations

from typer.testing import CliRunner

from calprompt.cli.toy import toy_app
from calprompt.toy.model import load_toy_clip_model


def test_pretrain_command_with_a_tiny_step_count(tmp_path):
    args = ["pretrain", "--out", str(tmp_path), "--steps", "2", "--batch-size", "4", "--workers", "0", "--eval", ""]
    result = CliRunner().invoke(toy_app, args)
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output
    _, meta = load_toy_clip_model(tmp_path / "toy_clip.safetensors")
    assert meta["steps"] == 2 and meta["batch_size"] == 4


def test_pretrain_command_rejects_bad_numbers(tmp_path):
    result = CliRunner().invoke(toy_app, ["pretrain", "--out", str(tmp_path), "--steps", "0"])
    assert result.exit_code != 0
    assert not (tmp_path / "toy_clip.safetensors").exists()
