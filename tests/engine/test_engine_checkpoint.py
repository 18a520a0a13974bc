"""Checkpoints: a process killed between writing the tensors and the JSON never pairs one epoch with another's."""

from __future__ import annotations

import pytest
import torch

from calprompt.engine import checkpoint as checkpoint_module
from calprompt.engine.checkpoint import TrainingState, load_training_state, save_training_state


def _state(epoch: int, value: float) -> TrainingState:
    return TrainingState(epoch, {"ctx": torch.full((2, 3), value)}, {"ctx": torch.full((2, 3), -value)}, {}, [])


class _KilledError(Exception):
    pass


def test_a_kill_between_tensors_and_json_leaves_the_previous_epoch_whole(tmp_path, monkeypatch):
    save_training_state(tmp_path, _state(0, 1.0))

    def killed(*args, **kwargs):
        raise _KilledError  # the process dies after the tensors of epoch 1 are on disk, before their JSON

    monkeypatch.setattr(checkpoint_module, "write_json_atomic", killed)
    with pytest.raises(_KilledError):
        save_training_state(tmp_path, _state(1, 2.0))
    monkeypatch.undo()
    state = load_training_state(tmp_path)
    assert state.epoch == 0 and torch.equal(state.parameters["ctx"], torch.full((2, 3), 1.0))
    assert torch.equal(state.optimizer["ctx"], torch.full((2, 3), -1.0))

    save_training_state(tmp_path, _state(1, 2.0))  # the next save completes and removes older tensor files
    assert load_training_state(tmp_path).epoch == 1
    assert sorted(path.name for path in tmp_path.glob("*.safetensors")) == ["checkpoint-00001.safetensors"]
