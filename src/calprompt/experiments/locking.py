"""One writer per run directory: an exclusive ``flock`` on a lock file, released by the kernel when its process dies.

A crashed or killed process therefore never leaves a stale lock behind (unlike a lock *file* whose existence is the
lock). ``flock`` locks are advisory and per open file: every calprompt writer goes through `run_lock`.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


class RunDirectoryBusyError(OSError):
    """Another process holds the lock of a run directory."""


@contextmanager
def run_lock(folder: str | Path, *, wait: float = 0.0) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (created if needed) for the ``with`` block.

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
