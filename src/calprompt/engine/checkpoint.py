"""Training checkpoints: the learned prompt weights and optimizer momentum as safetensors, the rest as JSON.

Never pickles. The JSON is written after the tensors, so a checkpoint counts as present only when both are complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from calprompt._io import save_tensors_atomic, write_json_atomic

TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "checkpoint.json"


@dataclass
class TrainingState:
    """Everything needed to continue training after ``epoch`` (0-based, completed)."""

    epoch: int
    parameters: dict[str, Tensor]
    optimizer: dict[str, Tensor]
    identity: dict[str, Any]
    history: list[dict[str, Any]]
    method_state: dict[str, Tensor] = field(default_factory=dict)  # `PromptMethod.extra_state()`


def save_training_state(folder: str | Path, state: TrainingState) -> None:
    folder = Path(folder)
    tensors = {f"param/{k}": v for k, v in state.parameters.items()}
    tensors.update({f"momentum/{k}": v for k, v in state.optimizer.items()})
    tensors.update({f"state/{k}": v for k, v in state.method_state.items()})
    save_tensors_atomic(folder / TENSORS_FILE, tensors)
    write_json_atomic(folder / STATE_FILE, {"epoch": state.epoch, "identity": state.identity, "history": state.history})


def load_training_state(folder: str | Path) -> TrainingState | None:
    """The checkpoint in ``folder``, or ``None`` when there is none."""
    folder = Path(folder)
    state_path, tensors_path = folder / STATE_FILE, folder / TENSORS_FILE
    if not state_path.is_file():
        return None
    if not tensors_path.is_file():
        raise FileNotFoundError(f"{state_path} exists but {tensors_path} is missing; delete {folder} to start over.")
    meta = json.loads(state_path.read_text(encoding="utf-8"))
    tensors = load_file(str(tensors_path))
    return TrainingState(
        epoch=int(meta["epoch"]),
        parameters={k.removeprefix("param/"): v for k, v in tensors.items() if k.startswith("param/")},
        optimizer={k.removeprefix("momentum/"): v for k, v in tensors.items() if k.startswith("momentum/")},
        identity=meta["identity"],
        history=meta["history"],
        method_state={k.removeprefix("state/"): v for k, v in tensors.items() if k.startswith("state/")},
    )
