"""What identifies a run: its resolved config, a fingerprint of the data it used and of the backbone weights.

Two runs with equal identities produce the same results (up to the float rounding of another device), so the
identity is what resume, ``eval``, the grid, the results store and the feature cache compare before they reuse
anything. It has three parts:

* ``config``: every `RunConfig` field that can change a number (device and worker count excluded), with the data
  root resolved to an absolute path; its hash is the run id that names the store directory.
* ``data``: a fingerprint of the data actually used (class names, template and every item of the few-shot train,
  val and test splits, with each image file's size and modification time), so a changed split file, an image
  replaced in place or another root with the same layout never passes for the same data; with the test split of
  every transfer target of ``RunConfig.eval_datasets``, whose results a finished run also stores.
* ``weights``: the backbone architecture and a content digest of a weights file (or the hub tag).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calprompt._io import file_sha256, file_stamp
from calprompt.experiments.config import (
    MECHANICS,
    TEST_TIME_PROTOCOL,
    RunConfig,
    protocol_fields,
    without_unset,
)

if TYPE_CHECKING:
    from calprompt.data.items import DatasetSplits, Item

IDENTITY_VERSION = 1
# `rundir.PROMPT_FILE` (rundir builds on this module): the prompts of a test-time run's ``init_run`` are identity.
INIT_PROMPTS = "prompt.safetensors"


def canonical_hash(data: Any) -> str:
    """sha256 of the canonical JSON of ``data`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def items_fingerprint(items: Iterable[Item]) -> str:
    """sha256 over each item's path, label, class name and file stamp, in order."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.impath}\t{item.label}\t{item.classname}\t{file_stamp(item.impath)}\n".encode())
    return digest.hexdigest()


def data_fingerprint(splits: DatasetSplits) -> str:
    """The fingerprint of the data a run uses: class names, template and the items of every split."""
    parts = {
        "classnames": list(splits.classnames),
        "template": splits.template,
        "val_is_test": splits.val_is_test,
        **{name: items_fingerprint(splits.split(name)) for name in ("train", "val", "test")},
    }
    return canonical_hash(parts)


def weights_fingerprint(backbone: str, pretrained: str | None) -> str:
    """The backbone's name and its weights: a content digest for a file, the tag or hub name otherwise."""
    from calprompt.clip.loading import file_digest

    path: Path | None = None
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        path = Path(pretrained).expanduser()
    elif backbone == "toy" and pretrained is None:
        from calprompt.toy.model import DEFAULT_CHECKPOINT

        path = Path(DEFAULT_CHECKPOINT)
    if path is not None:
        return f"{backbone}|file:{file_digest(path)}"
    return f"{backbone}|{pretrained}"


def config_record(config: RunConfig) -> dict[str, Any]:
    """The fields of the resolved config that determine the results (the fields declared as mechanics, such as
    the device, the worker count and the text encoder's memory budget, are left out)."""
    record = protocol_fields(config.resolved())
    for key in MECHANICS:
        record.pop(key, None)
    record = without_unset(record)  # settings added after runs were stored: at their old value, old ids
    if record.get("init_run") is not None:  # the prompts it starts from, not only where they were
        prompts = Path(record["init_run"]) / INIT_PROMPTS
        record["init_prompts"] = file_sha256(prompts) if prompts.is_file() else None
    return record


def run_id(config: RunConfig) -> str:
    """A short stable hash of what determines the results: it names the run's directory in the results store
    (the full identity adds the data and weights fingerprints)."""
    return canonical_hash(config_record(config))[:16]


def stored_record(config: RunConfig) -> dict[str, Any]:
    """`config_record` as it reads back from JSON (tuples become lists), the form identities are compared in."""
    return json.loads(json.dumps(config_record(config)))


@dataclass(frozen=True)
class RunIdentity:
    """The identity of one run; see the module docstring."""

    run_id: str
    config: dict[str, Any]
    data: str
    weights: str
    version: int = IDENTITY_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RunIdentity:
        return cls(**{key: data[key] for key in ("run_id", "config", "data", "weights", "version")})

    def differences(self, other: RunIdentity) -> list[str]:
        """Human-readable differences from ``other`` (empty when the identities are equal)."""
        if self == other:
            return []
        lines = []
        for key in sorted(set(self.config) | set(other.config)):
            mine, theirs = self.config.get(key, "<absent>"), other.config.get(key, "<absent>")
            if mine != theirs:
                lines.append(f"{key}: {theirs!r} there, {mine!r} here")
        if self.data != other.data:
            lines.append(
                "data: the items or image files of the dataset or of a transfer target differ (other root, split "
                "files or images)"
            )
        if self.weights != other.weights:
            lines.append(f"backbone weights: {other.weights} there, {self.weights} here")
        if self.version != other.version:
            lines.append(f"identity format: version {other.version} there, {self.version} here")
        return lines or ["the identities differ"]


def target_fingerprint(target: DatasetSplits) -> str:
    """The fingerprint of a transfer target as a run uses it: class names, template and its test items."""
    parts = {"classnames": list(target.classnames), "template": target.template, "test": items_fingerprint(target.test)}
    return canonical_hash(parts)


def with_targets(data: str, targets: Mapping[str, str]) -> str:
    """The data fingerprint of a run that also evaluates transfer targets (name -> `target_fingerprint`); a run
    without targets keeps the fingerprint it always had."""
    return canonical_hash({"run": data, "targets": dict(targets)}) if targets else data


def run_identity(
    config: RunConfig, data: str, targets: Mapping[str, str] | None = None, *, weights: str | None = None
) -> RunIdentity:
    """The identity of ``config`` run on data of fingerprint ``data`` (`data_fingerprint` of its few-shot splits)
    and on the transfer targets of its ``eval_datasets`` (name -> `target_fingerprint`; required when it lists any).
    ``weights`` is the `weights_fingerprint` of its backbone when the caller has it already."""
    resolved = config.resolved()
    targets = dict(targets or {})
    if sorted(targets) != sorted(resolved.eval_datasets):
        raise ValueError(
            f"Expected the loaded targets of eval_datasets {list(resolved.eval_datasets)}, got {sorted(targets)}."
        )
    return RunIdentity(
        run_id=run_id(resolved),
        config=stored_record(resolved),
        data=with_targets(data, targets),
        weights=weights or weights_fingerprint(resolved.backbone, resolved.pretrained),
    )


# ---------------------------------------------------------------------------------------------------------------------
# The data a run uses (what the data fingerprint covers)
def few_shot_splits(config: RunConfig, dataset: DatasetSplits | None = None) -> DatasetSplits:
    """The dataset's few-shot train/val and full test splits, all classes (``dataset``: its loaded splits, when the
    caller has them). A test-time run gets no train/val images: it uses none, so they are no part of its data
    fingerprint, and ``shots`` changes nothing."""
    from calprompt.data import load_dataset, sample_few_shot

    if dataset is None:
        dataset = load_dataset(config.dataset, config.root, skip_missing=config.skip_missing)
    if config.protocol == TEST_TIME_PROTOCOL:
        return replace(dataset, train=(), val=())
    return sample_few_shot(dataset, config.shots, config.seed)


def load_targets(config: RunConfig) -> dict[str, DatasetSplits]:
    """The transfer targets of ``config.eval_datasets``, by name, read from the run's data root."""
    from calprompt.data import load_dataset

    return {name: load_dataset(name, config.root, skip_missing=config.skip_missing) for name in config.eval_datasets}
