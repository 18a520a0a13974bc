"""The published benchmarks in the CoOp/Dassl layout: eleven datasets and four ImageNet domain-shift targets, each
registered with its layout (`calprompt.data.benchmark_layouts`), class count, split sizes and download steps.
"""

from __future__ import annotations

from calprompt.data.benchmark_layouts import (
    CLASSNAMES_TXT,
    AircraftSpec,
    ImageNetSpec,
    IndexFolderSpec,
    SplitFileSpec,
    WnidFolderSpec,
    split_hint,
)
from calprompt.data.registry import register_dataset

register_dataset(
    ImageNetSpec(
        name="imagenet",
        title="ImageNet",
        dataset_dir="imagenet",
        aliases=("ImageNet",),
        benchmark=True,
        num_classes=1000,
        sizes=(1_281_167, None, 50_000),
        download=split_hint(
            "ImageNet",
            """
            Extract the official ILSVRC-2012 train and val sets to imagenet/images/train and imagenet/images/val,
            both as one folder per wnid (n01440764, ...); symbolic links to an existing copy work.
            Put classnames.txt (from CLIP's prompt-engineering notebook) in imagenet/: """
            + CLASSNAMES_TXT,
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
        download=split_hint(
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
