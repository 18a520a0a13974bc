"""Calibration: train-time loss components, the composable objective and its presets, and post-hoc calibrators.

``from calprompt.calibration import margin_mean_variance, text_moment_matching`` gives the paper's regularizers as
plain tensor functions (and the label-free test-time terms of TPT, C-TPT and O-TPT);
:func:`build_objective` gives whole training objectives by name; every post-hoc calibrator
the README names (``TemperatureScaling``, ``DistanceAwareCalibration``, ...) is importable from here too.
"""

from calprompt.calibration.baselines import (
    focal_loss,
    label_smoothing_cross_entropy,
    mbls_penalty,
    zs_norm_cross_entropy,
    zs_norm_logits,
    zs_range_penalty,
)
from calprompt.calibration.conformal import SplitConformal
from calprompt.calibration.objective import CalibrationObjective, ObjectiveInputs, Term
from calprompt.calibration.posthoc import (
    DistanceAwareCalibration,
    NotFittedError,
    TemperatureScaling,
    ZeroShotLogitScaling,
)
from calprompt.calibration.presets import OBJECTIVE_PRESETS, build_objective, describe_presets, register_preset
from calprompt.calibration.procal import DensityRatioCalibration, ProximityIsotonicRegression
from calprompt.calibration.proximity import proximity
from calprompt.calibration.recalibration import HistogramBinning, IsotonicCalibration, MultiIsotonicRegression
from calprompt.calibration.registry import INPUT_NAMES, TERMS, register_term
from calprompt.calibration.terms import (
    TextMoments,
    cross_entropy,
    logit_margins,
    margin_mean_variance,
    text_moment_matching,
    text_moments,
)
from calprompt.calibration.test_time import (
    confident_views,
    gram_orthogonality,
    householder_orthogonality,
    marginal_entropy,
    text_feature_dispersion,
)

__all__ = [
    "INPUT_NAMES",
    "OBJECTIVE_PRESETS",
    "TERMS",
    "CalibrationObjective",
    "DensityRatioCalibration",
    "DistanceAwareCalibration",
    "HistogramBinning",
    "IsotonicCalibration",
    "MultiIsotonicRegression",
    "NotFittedError",
    "ObjectiveInputs",
    "ProximityIsotonicRegression",
    "SplitConformal",
    "TemperatureScaling",
    "Term",
    "TextMoments",
    "ZeroShotLogitScaling",
    "build_objective",
    "confident_views",
    "cross_entropy",
    "describe_presets",
    "focal_loss",
    "gram_orthogonality",
    "householder_orthogonality",
    "label_smoothing_cross_entropy",
    "logit_margins",
    "margin_mean_variance",
    "marginal_entropy",
    "mbls_penalty",
    "proximity",
    "register_preset",
    "register_term",
    "text_feature_dispersion",
    "text_moment_matching",
    "text_moments",
    "zs_norm_cross_entropy",
    "zs_norm_logits",
    "zs_range_penalty",
]
