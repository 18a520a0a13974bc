"""The composable objective, its presets and the component registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from calprompt.calibration import (
    INPUT_NAMES,
    OBJECTIVE_PRESETS,
    CalibrationObjective,
    ObjectiveInputs,
    Term,
    build_objective,
    focal_loss,
    label_smoothing_cross_entropy,
    margin_mean_variance,
    mbls_penalty,
    registry,
    text_moment_matching,
    text_moments,
    zs_norm_cross_entropy,
    zs_range_penalty,
)


@pytest.fixture(scope="module")
def batch() -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    frozen = torch.randn(5, 16, generator=g)
    return {
        "logits": torch.randn(8, 5, generator=g) * 15,
        "labels": torch.randint(0, 5, (8,), generator=g),
        "text_features": frozen + 0.3 * torch.randn(5, 16, generator=g),
        "zs_text_moments": text_moments(frozen),
        "zs_logits": torch.randn(8, 5, generator=g) * 5 + 20,
        "outlier_text_features": torch.randn(6, 16, generator=g),
        "zs_outlier_text_features": torch.randn(6, 16, generator=g),
    }


# Each preset's loss, written out with the reference constants of the papers (docs/objectives.md).
EXPECTED: dict[str, tuple[frozenset[str], Callable[[dict], torch.Tensor]]] = {
    "none": (frozenset({"logits", "labels"}), lambda b: F.cross_entropy(b["logits"], b["labels"])),
    "ours": (
        frozenset({"logits", "labels", "text_features", "zs_text_moments"}),
        lambda b: (
            F.cross_entropy(b["logits"], b["labels"])
            + margin_mean_variance(b["logits"], b["labels"], alpha=0.1, beta=0.01)
            + 5.0 * text_moment_matching(b["text_features"], b["zs_text_moments"])
        ),
    ),
    "margin": (
        frozenset({"logits", "labels"}),
        lambda b: (
            F.cross_entropy(b["logits"], b["labels"])
            + margin_mean_variance(b["logits"], b["labels"], alpha=0.1, beta=0.01)
        ),
    ),
    "moments": (
        frozenset({"logits", "labels", "text_features", "zs_text_moments"}),
        lambda b: (
            F.cross_entropy(b["logits"], b["labels"])
            + 5.0 * text_moment_matching(b["text_features"], b["zs_text_moments"])
        ),
    ),
    "mbls": (
        frozenset({"logits", "labels"}),
        lambda b: F.cross_entropy(b["logits"], b["labels"]) + 0.1 * mbls_penalty(b["logits"], margin=10.0),
    ),
    "zs-norm": (
        frozenset({"logits", "labels", "zs_logits"}),
        lambda b: zs_norm_cross_entropy(b["logits"], b["labels"], b["zs_logits"]),
    ),
    "penalty": (
        frozenset({"logits", "labels", "zs_logits"}),
        lambda b: F.cross_entropy(b["logits"], b["labels"]) + 10.0 * zs_range_penalty(b["logits"], b["zs_logits"]),
    ),
    "ls": (
        frozenset({"logits", "labels"}),
        lambda b: label_smoothing_cross_entropy(b["logits"], b["labels"], smoothing=0.1),
    ),
    "focal": (frozenset({"logits", "labels"}), lambda b: focal_loss(b["logits"], b["labels"], gamma=3.0)),
    "dor": (
        frozenset({"logits", "labels", "outlier_text_features", "zs_outlier_text_features"}),
        lambda b: (
            F.cross_entropy(b["logits"], b["labels"])
            + 8.0 * (1 - F.cosine_similarity(b["outlier_text_features"], b["zs_outlier_text_features"], dim=1).mean())
        ),
    ),
    # The test-time regularizers, written out independently (the Householder value through its closed form).
    "c-tpt": (
        frozenset({"logits", "labels", "text_features"}),
        lambda b: (
            F.cross_entropy(b["logits"], b["labels"])
            - 50.0 * (b["text_features"] - b["text_features"].mean(0)).norm(dim=1).mean()
        ),
    ),
    "o-tpt": (
        frozenset({"logits", "labels", "text_features"}),
        lambda b: (
            F.cross_entropy(b["logits"], b["labels"])
            + 18.0 * ((b["text_features"] @ b["text_features"].T).norm(dim=1) - 1).abs().mean()
        ),
    ),
    "o-tpt-gram": (
        frozenset({"logits", "labels", "text_features"}),
        lambda b: (
            F.cross_entropy(b["logits"], b["labels"])
            + 18.0
            * ((F.normalize(b["text_features"], dim=1) @ F.normalize(b["text_features"], dim=1).T) - torch.eye(5))
            .square()
            .sum()
        ),
    ),
}


def test_every_preset_is_covered() -> None:
    assert set(OBJECTIVE_PRESETS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_loss_and_needs(name: str, batch: dict) -> None:
    needs, expected = EXPECTED[name]
    objective = build_objective(name)
    assert objective.needs == needs
    inputs = {key: batch[key] for key in needs}  # only what it needs
    loss, parts = objective(**inputs)
    torch.testing.assert_close(loss, expected(batch))
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert parts["loss"] == pytest.approx(loss.item())
    assert all(isinstance(v, float) for v in parts.values())


def test_parts_are_unweighted_component_values(batch: dict) -> None:
    loss, parts = build_objective("ours", lambda_mm=2.0)(**batch)
    mm = text_moment_matching(batch["text_features"], batch["zs_text_moments"]).item()
    assert parts["text_moment_matching"] == pytest.approx(mm)
    assert parts["cross_entropy"] == pytest.approx(F.cross_entropy(batch["logits"], batch["labels"]).item())
    expected = parts["cross_entropy"] + parts["margin_mean_variance"] + 2.0 * mm
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_objective_backpropagates_and_takes_objective_inputs(batch: dict) -> None:
    logits = batch["logits"].clone().requires_grad_()
    features = batch["text_features"].clone().requires_grad_()
    inputs = ObjectiveInputs(logits=logits, labels=batch["labels"], text_features=features)
    loss, _ = build_objective("ours")(inputs, zs_text_moments=batch["zs_text_moments"])
    loss.backward()
    assert logits.grad is not None and features.grad is not None
    assert features.grad.abs().sum() > 0


def test_per_image_text_features(batch: dict) -> None:
    per_image = batch["text_features"].expand(3, -1, -1)  # (B, C, D) as CoCoOp produces
    loss, _ = build_objective("moments")(**{**batch, "text_features": per_image})
    reference, _ = build_objective("moments")(**batch)
    torch.testing.assert_close(loss, reference)


def test_objective_inputs_mirror_the_vocabulary() -> None:
    assert tuple(f.name for f in fields(ObjectiveInputs)) == INPUT_NAMES


def test_missing_input_is_named(batch: dict) -> None:
    with pytest.raises(ValueError, match=r"`zs_logits`.*zs_range_penalty"):
        build_objective("penalty")(logits=batch["logits"], labels=batch["labels"])
    with pytest.raises(ValueError, match="`text_features`"):
        build_objective("ours")(ObjectiveInputs(logits=batch["logits"], labels=batch["labels"]))


def test_unknown_input_name_is_rejected(batch: dict) -> None:
    with pytest.raises(ValueError, match="zs_logit"):
        build_objective("none")(logits=batch["logits"], labels=batch["labels"], zs_logit=batch["zs_logits"])


# ---------------------------------------------------------------- presets and overrides


def test_unknown_preset_lists_known_names() -> None:
    with pytest.raises(ValueError) as error:
        build_objective("tcpt")
    for name in EXPECTED:
        assert name in str(error.value)


def test_overrides_change_the_constants(batch: dict) -> None:
    objective = build_objective("ours", alpha=0.5, beta=0.2, lambda_mm=1.5)
    loss, _ = objective(**batch)
    expected = (
        F.cross_entropy(batch["logits"], batch["labels"])
        + margin_mean_variance(batch["logits"], batch["labels"], alpha=0.5, beta=0.2)
        + 1.5 * text_moment_matching(batch["text_features"], batch["zs_text_moments"])
    )
    torch.testing.assert_close(loss, expected)
    mbls, _ = build_objective("mbls", margin=2.0, alpha=0.7)(**batch)
    torch.testing.assert_close(
        mbls, F.cross_entropy(batch["logits"], batch["labels"]) + 0.7 * mbls_penalty(batch["logits"], margin=2.0)
    )
    penalty, _ = build_objective("penalty", weight=3.0)(**batch)
    zs = zs_range_penalty(batch["logits"], batch["zs_logits"])
    torch.testing.assert_close(penalty, F.cross_entropy(batch["logits"], batch["labels"]) + 3.0 * zs)


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("ls", {"gamma": 2.0}, "smoothing"),  # a constant the preset does not take; message lists what it takes
        ("none", {"alpha": 0.1}, "none"),
        ("ours", {"lambda_mm": -1.0}, "`lambda_mm`"),
        ("ours", {"alpha": float("nan")}, "`alpha`"),
        ("ls", {"smoothing": 1.5}, "`smoothing`"),
        ("focal", {"gamma": "3"}, "`gamma`"),
    ],
)
def test_invalid_overrides_raise(name: str, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_objective(name, **overrides)


def test_zero_weight_drops_the_term_and_its_needs() -> None:
    objective = build_objective("ours", lambda_mm=0.0)
    assert objective.needs == frozenset({"logits", "labels"})
    assert [term.name for term, _ in objective.terms] == ["margin_mean_variance"]


def test_serialisation_round_trip_is_json() -> None:
    for name in OBJECTIVE_PRESETS:
        objective = build_objective(name)
        data = json.loads(json.dumps(objective.to_dict()))
        assert CalibrationObjective.from_dict(data) == objective
    data = build_objective("ours", beta=0.05).to_dict()
    assert data == {
        "name": "ours",
        "base_loss": {"name": "cross_entropy", "params": {}},
        "terms": [
            {"name": "margin_mean_variance", "params": {"alpha": 0.1, "beta": 0.05}, "weight": 1.0},
            {"name": "text_moment_matching", "params": {}, "weight": 5.0},
        ],
    }
    with pytest.raises(ValueError, match="objective config"):
        CalibrationObjective.from_dict({"terms": []})


# ---------------------------------------------------------------- custom composition and the registry


def test_custom_composition(batch: dict) -> None:
    objective = CalibrationObjective(
        Term.of("focal_loss", gamma=1.0), ((Term.of("mbls_penalty", margin=3.0), 0.3), (Term("zs_range_penalty"), 2.0))
    )
    assert objective.needs == frozenset({"logits", "labels", "zs_logits"})
    loss, parts = objective(**batch)
    z, y = batch["logits"], batch["labels"]
    expected = (
        focal_loss(z, y, gamma=1.0) + 0.3 * mbls_penalty(z, margin=3.0) + 2.0 * zs_range_penalty(z, batch["zs_logits"])
    )
    torch.testing.assert_close(loss, expected)
    assert set(parts) == {"focal_loss", "mbls_penalty", "zs_range_penalty", "loss"}


def test_composition_is_validated() -> None:
    with pytest.raises(ValueError, match="`base_loss`"):
        CalibrationObjective(Term("mbls_penalty"))
    with pytest.raises(ValueError, match="`terms`"):
        CalibrationObjective(Term("cross_entropy"), ((Term("focal_loss"), 1.0),))
    with pytest.raises(ValueError, match="weight"):
        CalibrationObjective(Term("cross_entropy"), ((Term("mbls_penalty"), 0.0),))
    with pytest.raises(ValueError, match="distinct"):
        CalibrationObjective(
            Term("cross_entropy"), ((Term("mbls_penalty"), 1.0), (Term.of("mbls_penalty", margin=2), 1.0))
        )
    with pytest.raises(ValueError, match="constants of `focal_loss`"):
        Term.of("focal_loss", alpha=1.0)
    with pytest.raises(ValueError, match="margin_mean_variance"):
        Term("no_such_term")


def test_registry_rejects_duplicates_and_unknown_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "TERMS", dict(registry.TERMS))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_term("cross_entropy", needs=("logits", "labels"))
    with pytest.raises(ValueError, match="`needs`"):
        registry.register_term("new_term", needs=("pixel_values",))

    @registry.register_term("double_max", needs=("logits",))
    def double_max(logits: torch.Tensor, factor: float = 2.0) -> torch.Tensor:
        return factor * logits.amax(dim=1).mean()

    spec = registry.TERMS["double_max"]
    assert spec.needs == ("logits",) and dict(spec.defaults) == {"factor": 2.0} and spec.role == "regularizer"
    objective = CalibrationObjective(Term("cross_entropy"), ((Term.of("double_max", factor=3.0), 0.5),))
    z, y = torch.tensor([[1.0, 4.0]]), torch.tensor([1])
    loss, _ = objective(logits=z, labels=y)
    torch.testing.assert_close(loss, F.cross_entropy(z, y) + 0.5 * 3.0 * 4.0)
