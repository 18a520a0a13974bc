"""All-class few-shot (Zhou et al., CoOp): tune and evaluate on every class of the dataset.

The computation is base-to-novel's with every class in the tuned half and no novel half: the same training, and the
same raw and post-hoc calibrated evaluation of the test split (temperature scaling fitted on the few-shot
validation split; no DAC, which needs classes unseen while tuning).
"""

from __future__ import annotations

from calprompt.data.items import DatasetSplits
from calprompt.experiments.protocols import register_protocol
from calprompt.experiments.protocols.base2novel import BaseToNovel


@register_protocol
class AllClasses(BaseToNovel):
    """Tune and evaluate on every class."""

    name = "all"
    evaluates_unseen_classes = False

    def halves(self, splits: DatasetSplits) -> tuple[DatasetSplits, DatasetSplits | None]:
        return splits, None
