"""Failed runs of a results store: ``<store>/failures/<run_id>.json`` holds the error, its traceback and the config.

A sweep records the failure and goes on. The record lives beside the run directories, never inside one (a run
directory belongs to its run identity alone), the run stays unfinished so the next sweep retries it, and a success
removes the record.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calprompt._io import write_json_atomic

FAILURES_DIR = "failures"


@dataclass(frozen=True)
class Failure:
    run_id: str
    config: dict[str, Any]
    error: str  # "ExceptionType: message"
    traceback: str


def _path(store_root: str | Path, run_id: str) -> Path:
    return Path(store_root) / FAILURES_DIR / f"{run_id}.json"


def record_failure(store_root: str | Path, run_id: str, config: dict[str, Any], error: BaseException | str) -> Failure:
    """Write the failure of run ``run_id`` (an exception, or a message when only that is known) into the store."""
    if isinstance(error, BaseException):
        message, text = f"{type(error).__name__}: {error}", "".join(traceback.format_exception(error))
    else:
        message, text = str(error), ""
    failure = Failure(run_id, config, message, text)
    write_json_atomic(_path(store_root, run_id), {"config": config, "error": message, "traceback": text})
    return failure


def clear_failure(store_root: str | Path, run_id: str) -> None:
    _path(store_root, run_id).unlink(missing_ok=True)


def iter_failures(store_root: str | Path) -> Iterator[Failure]:
    """Every recorded failure of the store, in run-id order."""
    folder = Path(store_root) / FAILURES_DIR
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        yield Failure(path.stem, data["config"], data["error"], data["traceback"])
