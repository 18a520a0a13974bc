"""The dataset registry: explicit built-in modules, duplicate names refused, unknown names listing the known ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calprompt.data import (
    BUILTIN_SPEC_MODULES,
    DatasetSpec,
    DatasetSplits,
    Item,
    get_dataset_spec,
    list_datasets,
    load_dataset,
    register_dataset,
    registry,
)

REPO = Path(__file__).resolve().parents[2]


def test_builtins_are_listed_explicitly_and_loaded_on_first_lookup():
    assert BUILTIN_SPEC_MODULES[:2] == ("calprompt.data.benchmarks", "calprompt.data.custom")
    code = (
        "import sys; from calprompt.data import registry; "
        "assert 'calprompt.data.benchmarks' not in sys.modules; "
        "print(' '.join(registry.list_datasets()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    names = out.stdout.split()
    # Registration order follows the module tuple: benchmarks first, then the custom layouts, then any later module.
    assert names[:17] == [
        *("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft"),
        *("sun397", "dtd", "eurosat", "ucf101", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"),
        *("folder", "csv"),
    ]


class _Generated(DatasetSpec):
    """A spec without files, like the toy world: it needs no root and brings its own image loader."""

    def read(self, root, *, skip_missing=False):
        items = tuple(Item(f"toy://{index}", index % 2, ("red circle", "blue square")[index % 2]) for index in range(4))
        return DatasetSplits(
            name=self.name,
            classnames=("red circle", "blue square"),
            train=items,
            val=(),
            test=items,
            image_loader=lambda impath: impath,  # stands in for a renderer
        )


@pytest.fixture
def scratch_registry(monkeypatch):
    """Register test specs into copies of the registry tables, so other tests never see them."""
    registry.list_datasets()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_LOOKUP", dict(registry._LOOKUP))


def test_spec_without_root(scratch_registry):
    register_dataset(_Generated(name="toy_shapes", title="Toy shapes", needs_root=False, aliases=("ToyShapes",)))
    splits = load_dataset("ToyShapes")
    assert splits.classnames == ("red circle", "blue square")
    assert splits.image_loader("toy://3") == "toy://3"
    assert "toy_shapes" in list_datasets()


def test_duplicate_names_and_aliases_are_refused(scratch_registry):
    with pytest.raises(ValueError, match="'oxford_pets' is already registered"):
        register_dataset(_Generated(name="oxford_pets", title="again"))
    with pytest.raises(ValueError, match="'oxfordpets' of 'my_pets' is already used by 'oxford_pets'"):
        register_dataset(_Generated(name="my_pets", title="again", aliases=("Oxford-Pets",)))
    assert "my_pets" not in list_datasets()


def test_unknown_name_lists_every_known_one():
    with pytest.raises(ValueError) as info:
        get_dataset_spec("cifar10")
    for name in list_datasets():
        assert name in str(info.value)
