"""Failed runs in the store: ``error.json`` (the error and its traceback) beside the run's files.

A sweep records the failure and goes on; the run stays unfinished, so the next sweep retries it, and a success
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

ERROR_FILE = "error.json"


@dataclass(frozen=True)
class Failure:
    path: Path
    config: dict[str, Any]
    error: str  # "ExceptionType: message"
    traceback: str


def record_failure(run_dir: str | Path, config: dict[str, Any], error: BaseException) -> Failure:
    """Write ``run_dir/error.json`` for ``error`` (raised while running ``config``) and return what was written."""
    run_dir = Path(run_dir)
    text = "".join(traceback.format_exception(error))
    failure = Failure(run_dir, config, f"{type(error).__name__}: {error}", text)
    write_json_atomic(run_dir / ERROR_FILE, {"config": config, "error": failure.error, "traceback": text})
    return failure


def clear_failure(run_dir: str | Path) -> None:
    (Path(run_dir) / ERROR_FILE).unlink(missing_ok=True)


def iter_failures(runs_root: str | Path) -> Iterator[Failure]:
    """Every recorded failure under ``runs_root`` (the store's folder of run directories), in name order."""
    root = Path(runs_root)
    if not root.is_dir():
        return
    for path in sorted(root.glob(f"*/{ERROR_FILE}")):
        data = json.loads(path.read_text(encoding="utf-8"))
        yield Failure(path.parent, data["config"], data["error"], data["traceback"])
