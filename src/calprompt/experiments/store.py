"""The results store: a directory of runs keyed by the hash of their resolved config, and the failures of its runs.

``root/runs/<run_id>/`` is the run directory of one config (see `calprompt.experiments.rundir` for its files and
guarantees). The directory name is the config hash only, so planning a sweep costs no data access; the full identity
(data fingerprint and weights included) is checked before a stored result is reused, and a directory whose data
changed since is refused rather than reported.

Failed runs: ``<store>/failures/<run_id>.json`` holds the error, its traceback and the config. A sweep records the
failure and goes on. The record lives beside the run directories, never inside one (a run directory belongs to its
run identity alone), the run stays unfinished so the next sweep retries it, and a success removes the record.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calprompt._io import read_json, write_json_atomic
from calprompt.experiments.config import RunConfig, row_settings, without_unset
from calprompt.experiments.identity import (
    RunIdentity,
    data_fingerprint,
    few_shot_splits,
    run_id,
    run_identity,
    target_fingerprint,
    weights_fingerprint,
)
from calprompt.experiments.rundir import CONFIG_FILE, RunRecord, read_finished, read_record

if TYPE_CHECKING:
    from calprompt.data.items import DatasetSplits
    from calprompt.experiments.runner import RunResult

RUNS_DIR = "runs"


@dataclass(frozen=True)
class StoredRun:
    """A finished run in the store: its directory, its resolved config (as stored), its metrics, and the settings
    that tell its table row apart (from its run record; derived from the config for runs written before records)."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    row: dict[str, Any] = field(default_factory=dict)
    record: RunRecord | None = None


class ResultsStore:
    """Runs under ``root/runs/<run_id>``; a store object reads each dataset and fingerprints each weights file once
    (make a new one to see files changed since)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self._datasets: dict[tuple[Any, ...], DatasetSplits] = {}
        self._data: dict[tuple[Any, ...], str] = {}
        self._targets: dict[tuple[Any, ...], str] = {}
        self._weights: dict[tuple[str, str | None], str] = {}

    def run_dir(self, config: RunConfig) -> Path:
        """The directory of ``config``'s run (named by the config hash; nothing is read or created)."""
        return self.root / RUNS_DIR / run_id(config)

    def identity(self, config: RunConfig) -> RunIdentity:
        """The full identity of ``config`` (reads the dataset's split lists and stats its images once per store)."""
        from calprompt.data import load_dataset

        config = config.resolved()
        dataset_key = (config.dataset, config.root, config.skip_missing)
        data_key = (*dataset_key, config.shots, config.seed)
        weights_key = (config.backbone, config.pretrained)
        if data_key not in self._data:
            if dataset_key not in self._datasets:  # read once per store: a sweep plans many runs of one dataset
                self._datasets[dataset_key] = load_dataset(
                    config.dataset, config.root, skip_missing=config.skip_missing
                )
            self._data[data_key] = data_fingerprint(few_shot_splits(config, self._datasets[dataset_key]))
        if weights_key not in self._weights:
            self._weights[weights_key] = weights_fingerprint(*weights_key)
        targets = {}
        for name in config.eval_datasets:  # transfer targets: their test splits, read once per store
            target_key = (name, config.root, config.skip_missing)
            if target_key not in self._targets:
                self._targets[target_key] = target_fingerprint(
                    load_dataset(name, config.root, skip_missing=config.skip_missing)
                )
            targets[name] = self._targets[target_key]
        return run_identity(config, self._data[data_key], targets, weights=self._weights[weights_key])

    def finished(self, config: RunConfig) -> dict[str, Any] | None:
        """The metrics of ``config``'s run if it finished with exactly this identity, else ``None``."""
        folder = self.run_dir(config)
        if not folder.is_dir():
            return None
        return read_finished(folder, self.identity(config))

    def iter_runs(self) -> Iterator[StoredRun]:
        """Every finished run in the store, in directory-name order (unfinished ones are left out)."""
        runs = self.root / RUNS_DIR
        if not runs.is_dir():
            return
        for folder in sorted(path for path in runs.iterdir() if path.is_dir()):
            metrics = read_finished(folder)
            if metrics is not None:
                yield read_stored_run(folder, metrics)

    def run(self, config: RunConfig, **kwargs: Any) -> RunResult:
        """Run ``config`` into its store directory (see `run_experiment` for the keyword arguments)."""
        from calprompt.experiments.runner import run_experiment

        return run_experiment(config, self.run_dir(config), **kwargs)


def read_stored_run(folder: Path, metrics: dict[str, Any]) -> StoredRun:
    """A finished run directory as the reports read it (``metrics`` as `read_finished` returned them)."""
    config = read_json(folder / CONFIG_FILE, fix=f"Delete {folder} to compute the run again.")
    record = read_record(folder)
    if record is not None:
        # rows written before a setting existed lack it; later ones carry its old value: the same row either way
        return StoredRun(folder, config, metrics, without_unset(record.row), record)
    fields = {key: value for key, value in config.items() if key != "run_id"}  # written before run records
    return StoredRun(folder, config, metrics, row_settings(RunConfig.from_dict(fields)))


# ---------------------------------------------------------------------------------------------------------------------
# Failures
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
