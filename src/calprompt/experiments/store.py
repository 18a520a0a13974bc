"""The results store: a directory of runs keyed by the hash of their resolved config.

``root/runs/<run_id>/`` is the run directory of one config (see `calprompt.experiments.rundir` for its files and
guarantees). The directory name is the config hash only, so planning a sweep costs no data access; the full identity
(data fingerprint and weights included) is checked before a stored result is reused, and a directory whose data
changed since is refused rather than reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calprompt._io import read_json
from calprompt.experiments.config import RunConfig
from calprompt.experiments.identity import (
    RunIdentity,
    data_fingerprint,
    stored_record,
    target_fingerprint,
    weights_fingerprint,
    with_targets,
)
from calprompt.experiments.rundir import CONFIG_FILE, read_finished

if TYPE_CHECKING:
    from calprompt.data.items import DatasetSplits
    from calprompt.experiments.run import RunResult

RUNS_DIR = "runs"


@dataclass(frozen=True)
class StoredRun:
    """A finished run in the store: its directory, its resolved config (as stored) and its metrics."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]


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
        return self.root / RUNS_DIR / _typed(config).run_id()

    def identity(self, config: RunConfig) -> RunIdentity:
        """The full identity of ``config`` (reads the dataset's split lists and stats its images once per store)."""
        from calprompt.data import load_dataset, sample_few_shot

        config = _typed(config)
        dataset_key = (config.dataset, config.root, config.skip_missing)
        data_key = (*dataset_key, config.shots, config.seed)
        weights_key = (config.backbone, config.pretrained)
        if data_key not in self._data:
            if dataset_key not in self._datasets:  # read once per store: a sweep plans many runs of one dataset
                dataset = load_dataset(config.dataset, config.root, skip_missing=config.skip_missing)
                self._datasets[dataset_key] = dataset
            splits = sample_few_shot(self._datasets[dataset_key], config.shots, config.seed)
            self._data[data_key] = data_fingerprint(splits)
        if weights_key not in self._weights:
            self._weights[weights_key] = weights_fingerprint(*weights_key)
        targets = {}
        for name in config.eval_datasets:  # transfer targets: their test splits, read once per store
            target_key = (name, config.root, config.skip_missing)
            if target_key not in self._targets:
                target = load_dataset(name, config.root, skip_missing=config.skip_missing)
                self._targets[target_key] = target_fingerprint(target)
            targets[name] = self._targets[target_key]
        return RunIdentity(
            run_id=config.run_id(),
            config=stored_record(config),
            data=with_targets(self._data[data_key], targets),
            weights=self._weights[weights_key],
        )

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
                config = read_json(folder / CONFIG_FILE, fix=f"Delete {folder} to compute the run again.")
                yield StoredRun(folder, config, metrics)

    def run(self, config: RunConfig, **kwargs: Any) -> RunResult:
        """Run ``config`` into its store directory (see `run_experiment` for the keyword arguments)."""
        from calprompt.experiments.run import run_experiment

        return run_experiment(config, self.run_dir(config), **kwargs)


def _typed(config: RunConfig) -> RunConfig:
    """The resolved config with typed options: what `run_experiment` hashes, so both name the same directory."""
    from calprompt.experiments.options import typed_run_config

    return typed_run_config(config.resolved())
