"""Zero-shot prompt templates beyond each dataset's own (`DatasetSpec.template`)."""

from __future__ import annotations

# CoOp's "ZeroshotCLIP2" ensemble: these seven plus the dataset's own template.
ENSEMBLE_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
