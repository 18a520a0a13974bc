"""What a planned run needs on disk, checked without loading anything: data folders and pretrained weights.

``calprompt sweep --dry-run`` lists these so that a grid of hundreds of runs does not find out in its first worker
that a dataset or the weights are missing. The checks only look: they read no images and download nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from calprompt.experiments.config import RunConfig


def missing_data(dataset: str, root: str | None) -> list[str]:
    """What dataset ``dataset`` lacks under ``root`` (exact paths), or ``[]`` when its files are all there."""
    from calprompt.data.registry import get_dataset_spec, missing_paths

    spec = get_dataset_spec(dataset)
    if not spec.needs_root:
        return []
    if root is None:
        return [f"{spec.name}: no data root given (set `root` in the sweep's base, or --set root=DIR)"]
    path = Path(root).expanduser()
    if not path.is_dir():
        return [f"{spec.name}: the data root {path} does not exist"]
    return [f"{spec.name}: missing {expected.describe()}" for expected in missing_paths(spec, path.absolute())]


def missing_weights(backbone: str, pretrained: str | None) -> str | None:
    """Why the weights of ``backbone``/``pretrained`` cannot be loaded offline, or ``None`` when they are found.

    ``pretrained=None`` is random initialisation (nothing to find); a path must exist; an open_clip tag must be in
    the Hugging Face cache (the only place an offline machine can load it from).
    """
    if pretrained is None or backbone.startswith(("local-dir:", "hf-hub:")):
        return None  # random init, or weights named by the folder / repository (checked when loading)
    if Path(pretrained).expanduser().is_file():
        return None
    if os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
        return f"{backbone}: the weights file {pretrained} does not exist"
    from calprompt.clip.loading import EMBEDDED_BACKBONES

    if backbone in EMBEDDED_BACKBONES:
        return f"{backbone}: the weights file {pretrained} does not exist"
    return _missing_hub_weights(backbone, pretrained)


def _missing_hub_weights(backbone: str, tag: str) -> str | None:
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    architecture = backbone.replace("/", "-")
    cfg = open_clip.get_pretrained_cfg(architecture, tag)
    if not cfg:
        return f"{backbone}: open_clip knows no pretrained weights tagged {tag!r}"
    hub = cfg.get("hf_hub")
    if not hub:
        return f"{backbone}/{tag}: these weights come from a URL, not the Hugging Face cache (check them by a run)"
    repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
    names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
        return None
    return f"{backbone}/{tag}: not in the Hugging Face cache (download once: `hf download {repo}`)"


def preflight(configs: Iterable[RunConfig]) -> list[str]:
    """Every missing data folder and weights file of ``configs``, each listed once."""
    problems: list[str] = []
    data, weights = set(), set()
    for config in configs:
        for dataset in (config.dataset, *config.eval_datasets):
            data.add((dataset, config.root))
        weights.add((config.backbone, config.pretrained))
    for dataset, root in sorted(data, key=str):
        problems += [p for p in missing_data(dataset, root) if p not in problems]
    for backbone, pretrained in sorted(weights, key=str):
        problem = missing_weights(backbone, pretrained)
        if problem and problem not in problems:
            problems.append(problem)
    return problems
