"""Crash-safe file writes: write a temporary file in the same folder, fsync it, then rename it over the target.

A reader therefore sees either the old file or the complete new one, never a partial write.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

TEMP_SUFFIX = ".tmp"


def is_temporary(name: str) -> bool:
    """Whether a file name is one of `write_atomic`'s temporaries (left behind only by a killed process)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it: it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Callable[[Path], None], *, durable: bool = True) -> None:
    """Call ``write(temp_path)`` and atomically move the result to ``path`` (parent folders are created).

    ``durable=False`` skips the fsync: a killed process still leaves the old or the new file, but after a power
    loss the new file may be empty or torn. Only for files whose readers verify them (feature-cache entries carry
    a checksum and are recomputed when it fails), where the sync would be paid on every write for nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        # mkstemp makes the file private (0600); a run's files are for everyone the umask lets read them, as a plain
        # open() would create them (a report copied to a web folder must be readable there).
        os.chmod(temp, 0o666 & ~_umask())
        if durable:
            with temp.open("rb") as stream:
                os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """JSON with sorted keys, written atomically; indented for people to read, or on one line (``indent=None``)
    for files rewritten often: only unindented JSON gets Python's C encoder (2-3x faster)."""
    text = json.dumps(data, indent=indent, sort_keys=True, allow_nan=False)
    write_atomic(path, lambda temp: temp.write_text(text + "\n", encoding="utf-8"))


def save_tensors_atomic(
    path: str | Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """A safetensors file, written atomically (tensors are made contiguous and moved to the CPU)."""
    prepared = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    # metadata=None rather than {}: safetensors writes an unreadable header for no tensors with empty metadata.
    write_atomic(path, lambda temp: save_file(prepared, str(temp), metadata=dict(metadata) if metadata else None))


class CorruptFileError(ValueError):
    """A file calprompt wrote (or expects) cannot be read back: the message names it and the fix."""


def read_json(path: str | Path, *, fix: str) -> Any:
    """The parsed JSON in ``path``; an unreadable or invalid file raises `CorruptFileError` naming it and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFileError(f"{path} is unreadable or not valid JSON ({error}). {fix}") from error


def load_tensors(path: str | Path, *, fix: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file; a truncated or foreign one raises `CorruptFileError` naming it and ``fix``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. {fix}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CorruptFileError(f"{path} is not a readable safetensors file ({error}). {fix}") from error


def file_stamp(path: str) -> str:
    """``"size:mtime_ns"`` of a file, or ``"-"`` when there is none (a virtual id: the toy world renders from ids).

    Size and modification time, not a content hash: hashing every test image would read the whole dataset on each
    run (ImageNet's test split is 6.4 GB), while a stat costs microseconds. A file replaced in place gets a new
    modification time (unless a copy tool preserved it on a file of the very same size).
    """
    try:
        stat = os.stat(path)
    except OSError:
        return "-"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's content."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()
