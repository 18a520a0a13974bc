"""Interrupting training at an epoch boundary from the loop's progress hook (for exact-resume tests)."""

from __future__ import annotations


class StopTrainingError(Exception):
    """Raised by :func:`stop_at_epoch` to simulate a crash."""


def stop_at_epoch(epoch: int):
    """A progress hook that raises when epoch ``epoch`` (0-based) starts, after the previous epoch's checkpoint."""

    def progress(iterator, total, description):
        if description.startswith(f"epoch {epoch + 1}/"):
            raise StopTrainingError
        return iterator

    return progress
