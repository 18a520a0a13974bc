"""The run directory: who may write into it (one process, under a lock), when a run counts as finished, what is
never replaced, and what a finished run holds for use elsewhere.

Layout of a run directory::

    identity.json          written first: the RunIdentity this directory belongs to (refused if another one)
    config.json            the resolved RunConfig (absolute paths), readable by `RunConfig.from_dict`
    checkpoint/            resume state while training
    prompt.safetensors, method.json, predictions.safetensors, metrics.json
    run.json               what the run is for its readers (`RunRecord`): the class names and template its prompts
                           were built for, its backbone and weights digest, its protocol's splits, and the
                           settings that tell its table row apart; with the frozen zero-shot text features and DAC's
                           inputs in predictions.safetensors and the temperature in metrics.json, ``predict`` and
                           ``eval --dataset`` need nothing but this directory and the backbone's weights
    evaluations.json       `eval` results on other datasets, keyed by target dataset and root (they accumulate)
    finished.json          written last: the identity's digest and the size and sha256 of every result file
    .lock                  the flock of `run_lock`

Directories written before ``run.json`` existed are still read: `read_record` returns ``None`` for them, and their
readers fall back to the run's data (`calprompt upgrade` writes the record where the data is).

A directory counts as finished only when ``finished.json`` exists, belongs to the same identity and every file it
lists is present with its recorded size (and, for small files, hash). A process killed at any point therefore leaves
a directory that is either finished with complete files or unfinished (and resumable); never finished-looking with
partial or mixed files.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from calprompt._io import CorruptFileError, file_sha256, is_temporary, read_json, write_json_atomic
from calprompt.experiments.identity import RunIdentity, canonical_hash

CONFIG_FILE, METRICS_FILE, PROMPT_FILE, METHOD_FILE = "config.json", "metrics.json", "prompt.safetensors", "method.json"
PREDICTIONS_FILE, IDENTITY_FILE = "predictions.safetensors", "identity.json"
FINISHED_FILE, EVALUATIONS_FILE, RECORD_FILE = "finished.json", "evaluations.json", "run.json"
RESULT_FILES = (CONFIG_FILE, PROMPT_FILE, METHOD_FILE, PREDICTIONS_FILE, METRICS_FILE, RECORD_FILE)
LOCK_FILE = ".lock"
RECORD_FORMAT = 1
_HASHED_BELOW = 16 << 20  # files smaller than this are re-hashed when a finished run is read back

_RERUN = "Use another output directory, or pass --force (force=True) to replace it."


class RunDirectoryMismatchError(ValueError):
    """A run directory belongs to another run (or to no calprompt run)."""


class RunDirectoryBusyError(OSError):
    """Another process holds the lock of a run directory."""


@dataclass(frozen=True)
class RunRecord:
    """What a finished run is, for the readers of its directory (``run.json``; see the module docstring).

    ``classnames`` and ``template`` are what the saved prompts were built for (the base classes under
    base-to-novel); ``classes`` lists the class names of each split the protocol evaluated; ``row`` holds the
    settings that tell the run's table row apart from others (`calprompt.experiments.config.row_settings`).
    """

    run_id: str
    protocol: str
    classnames: list[str]
    template: str
    backbone: str
    pretrained: str | None
    weights: str
    classes: dict[str, list[str]] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    format: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_record(folder: Path, record: RunRecord) -> None:
    write_json_atomic(folder / RECORD_FILE, record.to_dict())


def read_record(folder: Path) -> RunRecord | None:
    """The run record of ``folder``, or ``None`` for a run written before records existed."""
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    data = read_json(path, fix=f"Delete {folder} (or rerun with --force) to compute the run again.")
    try:
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this calprompt reads {RECORD_FORMAT}")
        return RunRecord(**data)
    except (AttributeError, TypeError, ValueError) as error:
        raise CorruptFileError(f"{path} is not a calprompt run record ({error}). {_RERUN}") from error


def identity_digest(identity: RunIdentity) -> str:
    return canonical_hash(identity.to_dict())


def read_identity(folder: Path) -> RunIdentity | None:
    """The identity a run directory belongs to, or ``None`` when it has none."""
    path = folder / IDENTITY_FILE
    if not path.is_file():
        return None
    data = read_json(path, fix=f"Delete {folder} (or pass --force) to start the run over.")
    try:
        return RunIdentity.from_dict(data)
    except (KeyError, TypeError) as error:
        raise CorruptFileError(f"{path} is not a calprompt run identity ({error}). {_RERUN}") from error


def is_empty(folder: Path) -> bool:
    """True when ``folder`` is absent or holds nothing but the lock file and temporaries of a killed writer."""
    return not folder.exists() or all(entry.name == LOCK_FILE or is_temporary(entry.name) for entry in folder.iterdir())


def clear(folder: Path) -> None:
    """Remove everything but the lock, the finished marker first (so a crash mid-way never looks finished)."""
    (folder / FINISHED_FILE).unlink(missing_ok=True)
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def claim_check(folder: Path, identity: RunIdentity) -> None:
    """Refuse a non-empty ``folder`` that holds another identity, or files of no calprompt run (writes nothing)."""
    if is_empty(folder):
        return
    stored = read_identity(folder)
    if stored is None:
        raise RunDirectoryMismatchError(
            f"{folder} is not empty and holds no calprompt run identity ({IDENTITY_FILE}): it is another "
            f"folder, or a run of an older calprompt version. {_RERUN}"
        )
    if stored != identity:
        listing = "\n".join(f"  {line}" for line in identity.differences(stored))
        raise RunDirectoryMismatchError(f"{folder} holds another run:\n{listing}\n{_RERUN}")


def claim(folder: Path, identity: RunIdentity, *, force: bool = False) -> bool:
    """Make ``folder`` the directory of ``identity`` (call it holding the lock); True when the run is finished.

    An empty directory gets ``identity.json``; one of the same identity is kept (finished, or resumed); one holding
    another identity, or files of no calprompt run, is refused with the differences named (`claim_check`) before
    anything is written. ``force`` clears the directory and starts the run over.
    """
    if not force:
        claim_check(folder, identity)
        if not is_empty(folder):
            return read_finished(folder, identity) is not None  # finished, or unfinished and resumed
    if folder.exists():
        clear(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / IDENTITY_FILE, identity.to_dict())
    return False


def mark_finished(folder: Path, identity: RunIdentity, files: tuple[str, ...] = RESULT_FILES) -> None:
    """Write the finished marker last: the identity's digest and the size and sha256 of each result file."""
    listing = {name: {"size": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)} for name in files}
    write_json_atomic(folder / FINISHED_FILE, {"identity": identity_digest(identity), "files": listing})


def read_finished(folder: Path, identity: RunIdentity | None = None) -> dict[str, Any] | None:
    """The metrics of a finished run (with its evaluations on other datasets), or ``None`` when unfinished.

    With ``identity``, a run of another identity also counts as unfinished. A result file that changed since the run
    finished raises `CorruptFileError` naming it.
    """
    marker_path = folder / FINISHED_FILE
    if not marker_path.is_file():
        return None
    fix = f"Delete {folder} (or rerun with --force) to compute the run again."
    marker = read_json(marker_path, fix=fix)
    stored = read_identity(folder)
    if stored is None or not isinstance(marker, dict) or marker.get("identity") != identity_digest(stored):
        raise CorruptFileError(f"{marker_path} does not match {folder / IDENTITY_FILE}. {fix}")
    if identity is not None and stored != identity:
        return None
    for name, recorded in marker.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != recorded["size"]:
            raise CorruptFileError(f"{path} is missing or truncated since the run finished. {fix}")
        if recorded["size"] < _HASHED_BELOW and file_sha256(path) != recorded["sha256"]:
            raise CorruptFileError(f"{path} was modified since the run finished. {fix}")
    metrics = read_json(folder / METRICS_FILE, fix=fix)
    return {**metrics, **{key: entry["report"] for key, entry in read_evaluations(folder).items()}}


def read_evaluations(folder: Path) -> dict[str, dict[str, Any]]:
    """``eval`` results of a run on other datasets: ``{"eval:<dataset>[@<root>]": {"dataset", "root", ...}}``."""
    path = folder / EVALUATIONS_FILE
    if not path.is_file():
        return {}
    return read_json(path, fix=f"Delete {path} and evaluate again (`calprompt eval`).")


def evaluation_key(dataset: str, root: str | None) -> str:
    """``eval:<dataset>`` for datasets without files, ``eval:<dataset>@<absolute root>`` otherwise."""
    return f"eval:{dataset}" if root is None else f"eval:{dataset}@{root}"


@contextmanager
def run_lock(folder: str | Path, *, wait: float = 0.0) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (created if needed) for the ``with`` block: one writer per run
    directory. An ``flock`` is released by the kernel when its process dies, so a crashed or killed process never
    leaves a stale lock behind (unlike a lock file whose existence is the lock); every writer goes through here.

    ``wait`` seconds to wait for another holder (0: fail at once) before raising `RunDirectoryBusyError`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with path.open("a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise RunDirectoryBusyError(
                        f"Another calprompt process (pid {holder}) is writing to {folder}. Wait for it to finish, "
                        "or use another output directory."
                    ) from None
                time.sleep(0.1)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
