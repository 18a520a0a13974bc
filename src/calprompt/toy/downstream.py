"""Downstream toy datasets: classes made of scene factors, rendered in a style their template does not name.

Items carry virtual ids ``toy://<dataset>/<split>/<index>`` (``?seed=N`` appended for a world seed other than 0),
and `load_toy_image` renders an id deterministically, so a dataset needs no files and a feature cache can key on ids.
Item ``index`` has label ``index % num_classes``: classes interleave, and a smaller split is a prefix of a larger one.
"""

from __future__ import annotations

import functools
import itertools
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from calprompt._validation import check_choice, check_non_negative_int, check_positive_int, fail
from calprompt.data.items import DatasetSplits, Item
from calprompt.toy.render import COLOURS, IMAGE_SIZE, SHAPES, TEXTURES, Scene, render_scene, sample_scene
from calprompt.toy.styles import STYLES

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_SIZES: dict[str, int] = {"train": 50, "val": 20, "test": 50}  # images per class
FACTOR_VALUES: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "shape": SHAPES, "texture": TEXTURES}


@dataclass(frozen=True)
class ToyDatasetSpec:
    """A toy dataset: its classes are all combinations of `factors` (words in that order), drawn in `style`.

    Labels follow `label_order` (the factors by which classes are sorted; default: the naming order). The base/novel
    split takes the first half of the labels, so this order decides what novel classes share with base ones: with
    shape-major labels, base classes hold every colour together with its inverted complement, which makes the
    inverted style a gap that the hand-written template does not close.
    """

    name: str
    factors: tuple[str, ...]
    style: str
    template: str = "a photo of a {}."
    description: str = ""
    label_order: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for factor in self.factors:
            check_choice(factor, "factor", FACTOR_VALUES)
        check_choice(self.style, "style", STYLES)
        if self.label_order and sorted(self.label_order) != sorted(self.factors):
            fail("label_order", f"a permutation of {self.factors}", self.label_order)

    @functools.cached_property
    def class_factors(self) -> tuple[dict[str, str], ...]:
        """Scene constraints of each class, in label order (sorted by the `label_order` factors' words)."""
        order = self.label_order or self.factors
        combos = [
            dict(zip(self.factors, c, strict=True))
            for c in itertools.product(*(FACTOR_VALUES[f] for f in self.factors))
        ]
        return tuple(sorted(combos, key=lambda c: [c[f] for f in order]))

    @functools.cached_property
    def classnames(self) -> tuple[str, ...]:  # cached: every item id spells its class name
        return tuple(" ".join(c[f] for f in self.factors) for c in self.class_factors)


TOY_DATASET_SPECS: dict[str, ToyDatasetSpec] = {
    spec.name: spec
    for spec in (
        ToyDatasetSpec(
            "toy",
            ("colour", "shape"),
            "inverted",
            description="8 colours x 6 shapes (48 classes, 'red circle') in the inverted style, which 'a photo of a "
            "{}.' does not describe; labels are shape-major, so base classes are circles, crosses and rings of every "
            "colour, novel ones squares, stars and triangles.",
            label_order=("shape", "colour"),
        ),
        ToyDatasetSpec(
            "toy-texture",
            ("texture", "colour"),
            "photo",
            description="4 textures x 8 colours (32 classes, 'striped red'), shape a nuisance, in the photo style; "
            "labels are texture-major: base classes are checkered and dotted, novel ones plain and striped.",
        ),
        ToyDatasetSpec(
            "toy-domain",
            ("colour", "shape"),
            "sketch",
            description="the 48 classes of `toy` as sketches (same label order): a distribution shift for prompts "
            "tuned on `toy`.",
            label_order=("shape", "colour"),
        ),
    )
}
TOY_DATASETS: tuple[str, ...] = tuple(TOY_DATASET_SPECS)
TOY_DATASET_ALIASES: dict[str, str] = {"toy-colour-shape": "toy"}

_ID = re.compile(
    r"^toy://(?P<name>[a-z-]+)/(?P<split>[a-z]+)/(?P<index>\d+)/(?P<tail>[a-z-]+/[a-z]+)(\?seed=(?P<seed>\d+))?$"
)


def get_toy_spec(name: str) -> ToyDatasetSpec:
    """The spec of a toy dataset by name or alias."""
    canonical = TOY_DATASET_ALIASES.get(name, name)
    if canonical not in TOY_DATASET_SPECS:
        fail("toy dataset name", f"one of {(*TOY_DATASETS, *TOY_DATASET_ALIASES)}", name)
    return TOY_DATASET_SPECS[canonical]


def _id_tail(spec: ToyDatasetSpec, index: int) -> str:
    """The class and style of item `index`, spelled into its id ("blue-circle/inverted")."""
    return f"{spec.classnames[index % len(spec.classnames)].replace(' ', '-')}/{spec.style}"


def toy_item_id(name: str, split: str, index: int, seed: int = 0) -> str:
    """The virtual image id of item `index` of `split`.

    The id spells out the item's class and style, so it names one image whatever the dataset definitions say: if a
    definition changes (label order, style), its ids change too, and nothing keyed by them (feature caches) goes stale.
    """
    spec = get_toy_spec(name)
    return f"toy://{spec.name}/{split}/{index:05d}/{_id_tail(spec, index)}" + (f"?seed={seed}" if seed else "")


def parse_toy_item_id(impath: str) -> tuple[str, str, int, int]:
    """(dataset, split, index, seed) of a virtual id; raises a ValueError naming the id otherwise."""
    match = _ID.match(impath)
    if match is None or match["split"] not in SPLITS:
        fail("toy image id", "of the form 'toy://<dataset>/<train|val|test>/<index>/<class>/<style>[?seed=N]'", impath)
    spec = get_toy_spec(match["name"])
    index = int(match["index"])
    if match["tail"] != _id_tail(spec, index):
        fail(
            "toy image id",
            f"to end in {_id_tail(spec, index)!r} (this version's class and style of item {index}); "
            "it comes from another version of the toy datasets",
            impath,
        )
    return match["name"], match["split"], index, int(match["seed"] or 0)


def item_scene(name: str, split: str, index: int, seed: int = 0) -> Scene:
    """The scene of one item: its class factors and the dataset's style fixed, nuisances drawn from its own seed."""
    spec = get_toy_spec(name)
    check_choice(split, "split", SPLITS)
    constraints = spec.class_factors[index % len(spec.class_factors)]
    # crc32: a name hash that is stable across processes (Python's hash() is salted).
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode()), SPLITS.index(split), index])
    return sample_scene(rng, style=spec.style, **constraints)


@functools.lru_cache(maxsize=32768)
def _render_item(name: str, split: str, index: int, seed: int) -> bytes:
    # Memoise bytes: immutable, so no caller can change what later calls get.
    return render_scene(item_scene(name, split, index, seed)).tobytes()


def load_toy_array(impath: str) -> np.ndarray:
    """Render a virtual id as a uint8 array (32, 32, 3); memoised, so later epochs do not re-render."""
    data = _render_item(*parse_toy_item_id(impath))
    return np.frombuffer(data, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 3)


def load_toy_image(impath: str) -> Image.Image:
    """Render a virtual id as a 32x32 RGB PIL image (the `image_loader` of every toy dataset)."""
    return Image.frombytes("RGB", (IMAGE_SIZE, IMAGE_SIZE), _render_item(*parse_toy_item_id(impath)))


def render_items(items: Iterable[Item]) -> np.ndarray:
    """Images of `items` as one uint8 array (N, 32, 32, 3)."""
    arrays = [load_toy_array(item.impath) for item in items]
    if not arrays:
        return np.empty((0, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return np.stack(arrays)


def clear_render_cache() -> None:
    """Forget memoised renders (to measure rendering, or free ~3 KB per image)."""
    _render_item.cache_clear()


def build_toy_dataset(name: str, seed: int = 0, split_sizes: Mapping[str, int] | None = None) -> DatasetSplits:
    """Train/val/test splits of a toy dataset; `split_sizes` are images per class (default `SPLIT_SIZES`)."""
    spec = get_toy_spec(name)
    check_non_negative_int(seed, "seed")
    sizes = dict(SPLIT_SIZES)
    for split, size in (split_sizes or {}).items():
        check_choice(split, "split_sizes key", SPLITS)
        sizes[split] = check_positive_int(size, f"split_sizes[{split!r}]")
    classnames = spec.classnames
    n = len(classnames)

    def items(split: str) -> tuple[Item, ...]:
        return tuple(
            Item(toy_item_id(spec.name, split, i, seed), i % n, classnames[i % n]) for i in range(n * sizes[split])
        )

    return DatasetSplits(
        name=spec.name,
        classnames=classnames,
        train=items("train"),
        val=items("val"),
        test=items("test"),
        template=spec.template,
        image_loader=load_toy_image,
    )
