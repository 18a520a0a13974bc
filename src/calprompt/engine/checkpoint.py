"""Training checkpoints: the learned prompt weights and optimizer momentum as safetensors, the rest as JSON.

Never pickles. Each epoch's tensors go to their own file (``checkpoint-<epoch>.safetensors``), then the JSON that
names them replaces the previous one, then older tensor files are removed: a process killed at any moment leaves a
JSON whose tensors are complete and of the same epoch (overwriting one tensors file in place would pair, after a
kill between the two writes, the previous epoch's JSON with the next epoch's weights).

The JSON carries a sha256 of the tensors (names, dtypes, shapes, bytes) and of its own state (epoch, identity,
history), so an edited or damaged tensor or epoch counter is refused when the checkpoint is read, never resumed;
a non-finite tensor is refused as a corrupt checkpoint too (training never saves one: it stops on a non-finite loss).
Checkpoints written before checksums are read as they are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from calprompt._io import CorruptFileError, load_tensors, read_json, save_tensors_atomic, write_json_atomic

TENSORS_FILE = "checkpoint.safetensors"  # the name before per-epoch files (still read)
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
    name = f"checkpoint-{state.epoch:05d}.safetensors"
    save_tensors_atomic(folder / name, tensors)
    meta = {"epoch": state.epoch, "identity": state.identity, "history": state.history, "tensors": name}
    meta["sha256"] = checkpoint_digest(tensors, meta)
    write_json_atomic(folder / STATE_FILE, meta, indent=None)  # rewritten every epoch, its history growing
    for old in folder.glob("checkpoint*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_training_state(folder: str | Path) -> TrainingState | None:
    """The checkpoint in ``folder``, or ``None`` when there is none."""
    folder = Path(folder)
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        return None
    fix = f"Delete {folder} to restart training from the first epoch."
    meta = read_json(state_path, fix=fix)
    tensors_path = folder / str(meta.get("tensors", TENSORS_FILE) if isinstance(meta, dict) else TENSORS_FILE)
    if not tensors_path.is_file():
        raise FileNotFoundError(f"{state_path} exists but {tensors_path} is missing; delete {folder} to start over.")
    tensors = load_tensors(tensors_path, fix=fix)
    fix = f"Delete {folder} to restart training from the first epoch (or rerun with --force)."
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CorruptFileError(f"The checkpoint {tensors_path} is corrupt: {key} holds NaN or inf values. {fix}")
    if isinstance(meta, dict) and "sha256" in meta and meta["sha256"] != checkpoint_digest(tensors, meta):
        raise CorruptFileError(
            f"The checkpoint {state_path} does not match its checksum (its tensors in {tensors_path.name} or its "
            f"epoch/state were changed or damaged), so it is not resumed. {fix}"
        )
    try:
        return TrainingState(
            epoch=int(meta["epoch"]),
            parameters={k.removeprefix("param/"): v for k, v in tensors.items() if k.startswith("param/")},
            optimizer={k.removeprefix("momentum/"): v for k, v in tensors.items() if k.startswith("momentum/")},
            identity=meta["identity"],
            history=meta["history"],
            method_state={k.removeprefix("state/"): v for k, v in tensors.items() if k.startswith("state/")},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptFileError(f"{state_path} is not a calprompt checkpoint (missing {error}). {fix}") from error


def checkpoint_digest(tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """sha256 over each tensor (sorted by name: name, dtype, shape, bytes) and the state in ``meta`` (every key but
    the checksum itself, as canonical JSON)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}\n".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    state = {key: item for key, item in meta.items() if key != "sha256"}
    digest.update(json.dumps(state, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()
