"""What a dataset must have for a run, checked before any training; what is skipped is recorded with the reason.

A 6-class dataset under base-to-novel has 3 base classes: DAC's k (5 by default) is lowered to 3 and the run says so
in ``metrics.json["skipped"]``, instead of failing after training. A class with test items but no training items
is refused by name, as `calprompt datasets check` reports it.
"""

from __future__ import annotations

from calprompt._validation import fail
from calprompt.data.items import DatasetSplits
from calprompt.experiments.config import RunConfig


def check_minimums(
    config: RunConfig, splits: DatasetSplits, base: DatasetSplits, novel: DatasetSplits | None
) -> dict[str, str]:
    """Refuse, before any training, what cannot run; return what will be skipped, with the reason.

    ``splits`` are the few-shot splits of all classes, ``base`` and ``novel`` their halves (``novel`` None under
    the ``all`` protocol).

    A class with test items but no training items (a typo in a CSV, a folder only in ``test/``) is refused by name:
    under base-to-novel, whose halves are taken over the trained classes, it would be evaluated nowhere.
    """
    if not base.train:
        raise ValueError(
            f"Dataset {config.dataset!r} has no training items. A test-only dataset is an evaluation target: train "
            f"on another dataset, then `calprompt eval --run DIR --dataset {config.dataset}`."
        )
    trained = {item.label for item in splits.train}
    untrained = [name for label, name in enumerate(splits.classnames) if label not in trained]
    if untrained:  # `calprompt datasets check` reports the same classes
        raise ValueError(
            f"{len(untrained)} class(es) of {config.dataset!r} have no training items, so no prompt would ever see "
            f"them (and base-to-novel would evaluate them nowhere): {untrained[:10]}. Add training images for "
            "them, or fix their names if they are typos."
        )
    if novel is not None and len(trained) < 2:
        fail("protocol", "'all' for a dataset with fewer than 2 classes (base-to-novel needs two halves)", 1)
    skipped = {}
    if not base.val:
        skipped["ts"] = "no validation items to fit the temperature on (the dataset has no val split)"
    if novel is not None and dac_neighbours(config, base) < config.dac_k:
        skipped["dac_k"] = (
            f"DAC's k lowered from {config.dac_k} to the {len(base.classnames)} base classes (k <= base classes)"
        )
    return skipped


def dac_neighbours(config: RunConfig, base: DatasetSplits) -> int:
    """DAC's k: the configured one, at most the number of base classes."""
    return min(config.dac_k, len(base.classnames))
