"""Evaluation protocols beyond base-to-novel: the tuned prompts on other datasets' test splits, all their classes.

Cross-dataset transfer (prompts tuned on ImageNet evaluated on Caltech101, ...) and domain shift (ImageNet ->
ImageNet-V2/-Sketch/-A/-R; toy -> toy-domain) are the same computation: switch the method to the target's class
names and evaluate its test split. A run lists its targets in ``RunConfig.eval_datasets``; `calprompt eval --dataset`
adds one to a finished run.
"""

from __future__ import annotations

from calprompt.data import FeatureCache, ImageTransformConfig, get_dataset_spec, load_dataset
from calprompt.data.items import DatasetSplits
from calprompt.engine.evaluate import Predictions, predict
from calprompt.experiments.config import RunConfig
from calprompt.methods import PromptMethod

# The published domain-shift targets of ImageNet (Radford et al. 2021; Zhou et al. 2022).
IMAGENET_SHIFTS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def check_targets(config: RunConfig) -> None:
    """Refuse unknown target names, and targets that are the training dataset itself, before any work."""
    for name in config.eval_datasets:
        spec = get_dataset_spec(name)  # unknown names raise with the known ones
        if spec.name == get_dataset_spec(config.dataset).name:
            raise ValueError(
                f"Expected `eval_datasets` to name other datasets than the training one, got {name!r}: its test "
                "split is already evaluated (base and novel classes)."
            )


def load_targets(config: RunConfig) -> dict[str, DatasetSplits]:
    """The transfer targets of ``config.eval_datasets``, read from the run's data root, by name."""
    return {name: load_dataset(name, config.root, skip_missing=config.skip_missing) for name in config.eval_datasets}


def transfer_predictions(
    method: PromptMethod,
    target: DatasetSplits,
    name: str,
    transform: ImageTransformConfig,
    config: RunConfig,
    cache: FeatureCache | None,
) -> Predictions:
    """Logits of ``method`` on ``target``'s test split with the target's class names (the method keeps them)."""
    method.set_classnames(target.classnames)
    return predict(
        method,
        target.test,
        transform,
        loader=target.image_loader,
        device=config.device,
        precision=config.precision,
        cache=cache,
        cache_tag=(name, "test"),
        num_workers=config.num_workers,
    )
