"""The published benchmarks in the CoOp/Dassl layout: eleven datasets and four ImageNet domain-shift targets.

Paths, class-name rules and split formats follow KaiyangZhou/CoOp (``datasets/*.py``, ``DATASETS.md``).
One deliberate difference: where CoOp lists image folders in the file system's
own order (``os.listdir``, which differs between machines), calprompt sorts file names, so ImageNet few-shot subsets are
the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calprompt.data.items import DatasetSplits, Item
from calprompt.data.readers import (
    assemble,
    class_folders,
    classnames_from_items,
    folder_items,
    read_classnames_txt,
    read_split_json,
)
from calprompt.data.registry import DatasetSpec, ExpectedPath, register_dataset, require_root

_COOP = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
_CLASSNAMES_TXT = "https://drive.google.com/file/d/1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF/view?usp=sharing"


@dataclass(frozen=True, kw_only=True)
class SplitFileSpec(DatasetSpec):
    """A dataset whose train/val/test lists come from CoOp's ``split_zhou_*.json``."""

    image_dir: str  # split paths are relative to this folder ("" = the dataset folder itself)
    split_file: str
    renames: tuple[tuple[str, str], ...] = ()  # CoOp's class-name renamings, idempotent on its split files

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        folder = self.directory(root)
        return (
            ExpectedPath(folder / self.image_dir if self.image_dir else folder, "dir", "image folder"),
            ExpectedPath(folder / self.split_file, "file", "CoOp split file"),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        folder = self.directory(require_root(self, root))
        split_path = folder / self.split_file
        splits = read_split_json(split_path, folder / self.image_dir, renames=dict(self.renames))
        return assemble(
            name=self.name,
            template=self.template,
            classnames=classnames_from_items(splits, split_path),
            splits=splits,
            context=str(split_path),
            skip_missing=skip_missing,
        )


def _wnid_items(image_dir: Path, wnids: list[str], names: dict[str, str], names_path: Path) -> list[Item]:
    """Items of wnid class folders, label = position in ``wnids``, class name from ``classnames.txt``."""
    items: list[Item] = []
    for label, wnid in enumerate(wnids):
        if wnid not in names:
            raise ValueError(
                f"Folder {image_dir / wnid} is not listed in {names_path}. Use the classnames.txt from CoOp's "
                f"DATASETS.md ({_CLASSNAMES_TXT}) and remove folders that are not ImageNet classes."
            )
        items.extend(folder_items(image_dir / wnid, label, names[wnid]))
    return items


def _no_class_folders(folder: Path, hint: str) -> ValueError:
    return ValueError(f"{folder} has no class sub-folders. {hint}")


@dataclass(frozen=True, kw_only=True)
class ImageNetSpec(DatasetSpec):
    """ImageNet: wnid folders under ``images/train`` and ``images/val``; the val set is also the test set."""

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        folder = self.directory(root)
        return (
            ExpectedPath(folder / "images" / "train", "dir", "training images in 1,000 wnid folders"),
            ExpectedPath(folder / "images" / "val", "dir", "validation images in 1,000 wnid folders"),
            ExpectedPath(folder / "classnames.txt", "file", "CoOp's class-name list"),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        folder = self.directory(require_root(self, root))
        names_path = folder / "classnames.txt"
        names = read_classnames_txt(names_path)
        train_dir, val_dir = folder / "images" / "train", folder / "images" / "val"
        wnids = class_folders(train_dir)  # label = index in the sorted wnids, as in CoOp
        if not wnids:
            raise _no_class_folders(train_dir, "Extract the ImageNet training archives into one folder per wnid.")
        train = _wnid_items(train_dir, wnids, names, names_path)
        val_wnids = class_folders(val_dir)
        if not val_wnids:
            raise _no_class_folders(
                val_dir,
                "The official validation images come as one flat folder; sort them into wnid sub-folders "
                "(e.g. with the widely used valprep.sh script) as CoOp expects.",
            )
        unknown = sorted(set(val_wnids) - set(wnids))
        if unknown:
            raise ValueError(
                f"{val_dir} has class folders that {train_dir} lacks: {unknown[:5]}. Both must hold the same wnids."
            )
        label_of = {wnid: label for label, wnid in enumerate(wnids)}
        test = [item for wnid in val_wnids for item in folder_items(val_dir / wnid, label_of[wnid], names[wnid])]
        return assemble(
            name=self.name,
            template=self.template,
            classnames=[names[wnid] for wnid in wnids],
            splits={"train": train, "test": test},
            context=str(folder),
            skip_missing=skip_missing,
            check_files=False,  # listed from the folders themselves
            val_is_test=True,
        )


def _classnames_txt(spec: DatasetSpec, root: Path) -> ExpectedPath:
    # CoOp asks users to copy imagenet/classnames.txt next to each variant; the original is accepted too.
    return ExpectedPath(
        spec.directory(root) / "classnames.txt",
        "file",
        "copy of imagenet/classnames.txt",
        alternatives=(root / "imagenet" / "classnames.txt",),
    )


def _classnames_path(spec: DatasetSpec, root: Path) -> Path:
    expected = _classnames_txt(spec, root)
    found = expected.resolve()
    if found is None:
        raise FileNotFoundError(f"Class-name file not found: {expected.describe()}. {spec.download.strip()}")
    return found


@dataclass(frozen=True, kw_only=True)
class WnidFolderSpec(DatasetSpec):
    """A test-only ImageNet variant with one folder per wnid present (Sketch: 1000, -A and -R: 200 classes)."""

    image_dir: str

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        return (
            ExpectedPath(self.directory(root) / self.image_dir, "dir", "images in wnid folders"),
            _classnames_txt(self, root),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        root = require_root(self, root)
        names_path = _classnames_path(self, root)
        names = read_classnames_txt(names_path)
        image_dir = self.directory(root) / self.image_dir
        # Labels index the wnid folders present, sorted (= classnames.txt order, which is sorted by wnid).
        wnids = class_folders(image_dir)
        if not wnids:
            hint = f"Extract the {self.title} archive so that it holds one folder per wnid."
            raise _no_class_folders(image_dir, hint)
        test = _wnid_items(image_dir, wnids, names, names_path)
        return assemble(
            name=self.name,
            template=self.template,
            classnames=[names[wnid] for wnid in wnids],
            splits={"test": test},
            context=str(image_dir),
            skip_missing=skip_missing,
            check_files=False,
        )


@dataclass(frozen=True, kw_only=True)
class IndexFolderSpec(DatasetSpec):
    """ImageNet-V2: folders ``0`` .. ``999`` index the classes in ``classnames.txt`` order."""

    image_dir: str

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        return (
            ExpectedPath(self.directory(root) / self.image_dir, "dir", "images in folders 0..999"),
            _classnames_txt(self, root),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        root = require_root(self, root)
        names_path = _classnames_path(self, root)
        classnames = list(read_classnames_txt(names_path).values())
        image_dir = self.directory(root) / self.image_dir
        test: list[Item] = []
        for label, classname in enumerate(classnames):
            class_dir = image_dir / str(label)
            if not class_dir.is_dir():
                raise FileNotFoundError(
                    f"Class folder not found: {class_dir} ({names_path} lists {len(classnames)} classes, so folders "
                    f"0..{len(classnames) - 1} must exist). Re-extract the matched-frequency archive."
                )
            test.extend(folder_items(class_dir, label, classname))
        return assemble(
            name=self.name,
            template=self.template,
            classnames=classnames,
            splits={"test": test},
            context=str(image_dir),
            skip_missing=skip_missing,
            check_files=False,
        )


@dataclass(frozen=True, kw_only=True)
class AircraftSpec(DatasetSpec):
    """FGVC-Aircraft (variants): ``variants.txt`` gives the labels, ``images_variant_<split>.txt`` the items."""

    def expected_paths(self, root: Path) -> tuple[ExpectedPath, ...]:
        folder = self.directory(root)
        return (
            ExpectedPath(folder / "images", "dir", "image folder"),
            ExpectedPath(folder / "variants.txt", "file", "variant names, one per line"),
            *(
                ExpectedPath(folder / f"images_variant_{split}.txt", "file", f"{split} list")
                for split in ("train", "val", "test")
            ),
        )

    def read(self, root: Path | None, *, skip_missing: bool = False) -> DatasetSplits:
        folder = self.directory(require_root(self, root))
        variants_path = folder / "variants.txt"
        # Variant names may contain spaces and "/" (e.g. "F-16A/B"); the line index is the label.
        classnames = [line.strip() for line in variants_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        label_of = {name: label for label, name in enumerate(classnames)}
        splits: dict[str, list[Item]] = {}
        for split in ("train", "val", "test"):
            list_path = folder / f"images_variant_{split}.txt"
            items = []
            for number, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                image_id, _, classname = line.strip().partition(" ")
                if classname not in label_of:
                    raise ValueError(
                        f"{list_path}, line {number}: variant {classname!r} is not in {variants_path}; expected "
                        "'<image id> <variant>' with a variant from that file. Re-extract fgvc-aircraft-2013b."
                    )
                impath = str(folder / "images" / f"{image_id}.jpg")
                items.append(Item(impath=impath, label=label_of[classname], classname=classname))
            splits[split] = items
        return assemble(
            name=self.name,
            template=self.template,
            classnames=classnames,
            splits=splits,
            context=str(folder),
            skip_missing=skip_missing,
        )


def _split_hint(title: str, steps: str, split_file: str | None, url: str | None) -> str:
    lines = [f"  {step.strip()}" for step in steps.strip().splitlines()]
    if split_file and url:
        lines.append(f"  Put {split_file} (CoOp's fixed split) in the dataset folder: {url}")
    lines.append(f"  Full instructions: {_COOP}#{title.lower()}")
    return "\n".join(lines)


register_dataset(
    ImageNetSpec(
        name="imagenet",
        title="ImageNet",
        dataset_dir="imagenet",
        aliases=("ImageNet",),
        benchmark=True,
        num_classes=1000,
        sizes=(1_281_167, None, 50_000),
        download=_split_hint(
            "ImageNet",
            """
            Extract the official ILSVRC-2012 train and val sets to imagenet/images/train and imagenet/images/val,
            both as one folder per wnid (n01440764, ...); symbolic links to an existing copy work.
            Put classnames.txt (from CLIP's prompt-engineering notebook) in imagenet/: """
            + _CLASSNAMES_TXT,
            None,
            None,
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="caltech101",
        title="Caltech101",
        dataset_dir="caltech-101",
        image_dir="101_ObjectCategories",
        split_file="split_zhou_Caltech101.json",
        renames=(("airplanes", "airplane"), ("Faces", "face"), ("Leopards", "leopard"), ("Motorbikes", "motorbike")),
        aliases=("Caltech101", "caltech-101"),
        benchmark=True,
        num_classes=100,
        sizes=(4128, 1649, 2465),
        download=_split_hint(
            "Caltech101",
            "Extract 101_ObjectCategories.tar.gz (Caltech's site) into caltech-101/.",
            "split_zhou_Caltech101.json",
            "https://drive.google.com/file/d/1hyarUivQE36mY6jSomru6Fjd-JzwcCzN/view?usp=sharing",
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="oxford_pets",
        title="OxfordPets",
        dataset_dir="oxford_pets",
        image_dir="images",
        split_file="split_zhou_OxfordPets.json",
        template="a photo of a {}, a type of pet.",
        aliases=("OxfordPets", "pets"),
        benchmark=True,
        num_classes=37,
        sizes=(2944, 736, 3669),
        download=_split_hint(
            "OxfordPets",
            """
            Extract images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/data/
            into oxford_pets/ (giving oxford_pets/images and oxford_pets/annotations).""",
            "split_zhou_OxfordPets.json",
            "https://drive.google.com/file/d/1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs/view?usp=sharing",
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="stanford_cars",
        title="StanfordCars",
        dataset_dir="stanford_cars",
        image_dir="",  # the split's paths (cars_train/..., cars_test/...) are relative to the dataset folder
        split_file="split_zhou_StanfordCars.json",
        aliases=("StanfordCars", "cars"),
        benchmark=True,
        num_classes=196,
        sizes=(6509, 1635, 8041),
        download=_split_hint(
            "StanfordCars",
            """
            Extract cars_train.tgz and cars_test.tgz (Stanford Cars site) into stanford_cars/, giving
            stanford_cars/cars_train and stanford_cars/cars_test.""",
            "split_zhou_StanfordCars.json",
            "https://drive.google.com/file/d/1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT/view?usp=sharing",
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="oxford_flowers",
        title="Flowers102",
        dataset_dir="oxford_flowers",
        image_dir="jpg",
        split_file="split_zhou_OxfordFlowers.json",
        template="a photo of a {}, a type of flower.",
        aliases=("OxfordFlowers", "Flowers102", "flowers"),
        benchmark=True,
        num_classes=102,
        sizes=(4093, 1633, 2463),
        download=_split_hint(
            "Flowers102",
            """
            Extract 102flowers.tgz from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into oxford_flowers/
            (giving oxford_flowers/jpg). Class names come from the split file.""",
            "split_zhou_OxfordFlowers.json",
            "https://drive.google.com/file/d/1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT/view?usp=sharing",
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="food101",
        title="Food101",
        dataset_dir="food-101",
        image_dir="images",
        split_file="split_zhou_Food101.json",
        template="a photo of {}, a type of food.",
        aliases=("Food101", "food-101"),
        benchmark=True,
        num_classes=101,
        sizes=(50_500, 20_200, 30_300),
        download=_split_hint(
            "Food101",
            "Extract food-101.tar.gz (ETH Zurich's site) in the data root, giving food-101/images.",
            "split_zhou_Food101.json",
            "https://drive.google.com/file/d/1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl/view?usp=sharing",
        ),
    )
)

register_dataset(
    AircraftSpec(
        name="fgvc_aircraft",
        title="FGVCAircraft",
        dataset_dir="fgvc_aircraft",
        template="a photo of a {}, a type of aircraft.",
        aliases=("FGVCAircraft", "aircraft"),
        benchmark=True,
        num_classes=100,
        sizes=(3334, 3333, 3333),
        download=_split_hint(
            "FGVCAircraft",
            """
            Extract fgvc-aircraft-2013b.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/), keep only its
            data/ folder, and move it to the data root renamed to fgvc_aircraft/. No split JSON is needed.""",
            None,
            None,
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="sun397",
        title="SUN397",
        dataset_dir="sun397",
        image_dir="SUN397",
        split_file="split_zhou_SUN397.json",
        aliases=("SUN397", "sun"),
        benchmark=True,
        num_classes=397,
        sizes=(15_880, 3970, 19_850),
        download=_split_hint(
            "SUN397",
            "Extract SUN397.tar.gz (Princeton's SUN site) into sun397/, giving sun397/SUN397.",
            "split_zhou_SUN397.json",
            "https://drive.google.com/file/d/1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq/view?usp=sharing",
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="dtd",
        title="DTD",
        dataset_dir="dtd",
        image_dir="images",
        split_file="split_zhou_DescribableTextures.json",
        template="{} texture.",
        aliases=("DescribableTextures", "textures"),
        benchmark=True,
        num_classes=47,
        sizes=(2820, 1128, 1692),
        download=_split_hint(
            "DTD",
            "Extract dtd-r1.0.1.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/dtd/) in the data root (dtd/images).",
            "split_zhou_DescribableTextures.json",
            "https://drive.google.com/file/d/1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x/view?usp=sharing",
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="eurosat",
        title="EuroSAT",
        dataset_dir="eurosat",
        image_dir="2750",
        split_file="split_zhou_EuroSAT.json",
        template="a centered satellite photo of {}.",
        renames=(
            ("AnnualCrop", "Annual Crop Land"),
            ("HerbaceousVegetation", "Herbaceous Vegetation Land"),
            ("Highway", "Highway or Road"),
            ("Industrial", "Industrial Buildings"),
            ("Pasture", "Pasture Land"),
            ("PermanentCrop", "Permanent Crop Land"),
            ("Residential", "Residential Buildings"),
            ("SeaLake", "Sea or Lake"),
        ),
        aliases=("EuroSAT",),
        benchmark=True,
        num_classes=10,
        sizes=(13_500, 5400, 8100),
        download=_split_hint(
            "EuroSAT",
            "Extract EuroSAT.zip (RGB version) into eurosat/, giving eurosat/2750.",
            "split_zhou_EuroSAT.json",
            "https://drive.google.com/file/d/1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o/view?usp=sharing",
        ),
    )
)

register_dataset(
    SplitFileSpec(
        name="ucf101",
        title="UCF101",
        dataset_dir="ucf101",
        image_dir="UCF-101-midframes",
        split_file="split_zhou_UCF101.json",
        template="a photo of a person doing {}.",
        aliases=("UCF101", "ucf-101"),
        benchmark=True,
        num_classes=101,
        sizes=(7639, 1898, 3783),
        download=_split_hint(
            "UCF101",
            """
            Extract UCF-101-midframes.zip (CoOp's middle video frames, linked from its DATASETS.md) into ucf101/.""",
            "split_zhou_UCF101.json",
            "https://drive.google.com/file/d/1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y/view?usp=sharing",
        ),
    )
)

_COPY_NAMES = "Copy imagenet/classnames.txt into {dir}/ (or keep it in imagenet/, which is also looked up)."

register_dataset(
    IndexFolderSpec(
        name="imagenet_v2",
        title="ImageNet-V2",
        dataset_dir="imagenetv2",
        image_dir="imagenetv2-matched-frequency-format-val",
        aliases=("ImageNetV2",),
        test_only=True,
        benchmark=True,
        num_classes=1000,
        sizes=(None, None, 10_000),
        download=_split_hint(
            "ImageNetV2",
            """
            Extract imagenetv2-matched-frequency.tar.gz (https://github.com/modestyachts/ImageNetV2) into imagenetv2/.
            """
            + _COPY_NAMES.format(dir="imagenetv2"),
            None,
            None,
        ),
    )
)

register_dataset(
    WnidFolderSpec(
        name="imagenet_sketch",
        title="ImageNet-Sketch",
        dataset_dir="imagenet-sketch",
        image_dir="images",
        aliases=("ImageNetSketch",),
        test_only=True,
        benchmark=True,
        num_classes=1000,
        sizes=(None, None, 50_889),
        download=_split_hint(
            "ImageNet-Sketch",
            """
            Download ImageNet-Sketch (https://github.com/HaohanWang/ImageNet-Sketch) and extract it so that
            imagenet-sketch/images holds the 1,000 wnid folders.
            """
            + _COPY_NAMES.format(dir="imagenet-sketch"),
            None,
            None,
        ),
    )
)

register_dataset(
    WnidFolderSpec(
        name="imagenet_a",
        title="ImageNet-A",
        dataset_dir="imagenet-adversarial",
        image_dir="imagenet-a",
        aliases=("ImageNetA", "imagenet-adversarial"),
        test_only=True,
        benchmark=True,
        num_classes=200,
        sizes=(None, None, 7500),
        download=_split_hint(
            "ImageNet-A",
            """
            Extract imagenet-a.tar (https://github.com/hendrycks/natural-adv-examples) into imagenet-adversarial/.
            """
            + _COPY_NAMES.format(dir="imagenet-adversarial"),
            None,
            None,
        ),
    )
)

register_dataset(
    WnidFolderSpec(
        name="imagenet_r",
        title="ImageNet-R",
        dataset_dir="imagenet-rendition",
        image_dir="imagenet-r",
        aliases=("ImageNetR", "imagenet-rendition"),
        test_only=True,
        benchmark=True,
        num_classes=200,
        sizes=(None, None, 30_000),
        download=_split_hint(
            "ImageNet-R",
            """
            Extract imagenet-r.tar (https://github.com/hendrycks/imagenet-r) into imagenet-rendition/.
            """
            + _COPY_NAMES.format(dir="imagenet-rendition"),
            None,
            None,
        ),
    )
)
