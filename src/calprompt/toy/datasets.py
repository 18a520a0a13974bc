"""The toy datasets in the data registry, so every command accepts ``--dataset toy...`` like a real benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calprompt.data.items import DatasetSplits
from calprompt.data.registry import DatasetSpec, register_dataset
from calprompt.toy.downstream import TOY_DATASET_ALIASES, TOY_DATASET_SPECS, build_toy_dataset


@dataclass(frozen=True, kw_only=True)
class ToyWorldSpec(DatasetSpec):
    """A procedurally rendered dataset: no files, images are rendered from virtual ids."""

    needs_root: bool = False

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        return build_toy_dataset(self.name)


for _name, _spec in TOY_DATASET_SPECS.items():
    register_dataset(
        ToyWorldSpec(
            name=_name,
            title=_name,
            template=_spec.template,
            aliases=tuple(alias for alias, target in TOY_DATASET_ALIASES.items() if target == _name),
            num_classes=len(_spec.classnames),
            download=_spec.description,
        )
    )
