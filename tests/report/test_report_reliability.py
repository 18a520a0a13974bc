"""Reliability diagrams: files exist with the pixel size that figure size x dpi gives, bad arguments are refused."""

import pytest
import torch
from PIL import Image

from calprompt.metrics import evaluate
from calprompt.report import plot_reliability_diagram, plot_reliability_diagrams


@pytest.fixture(scope="module")
def reports():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=generator)
    logits = torch.randn(2000, 10, generator=generator)
    logits[torch.arange(2000), labels] += 2.0
    return {"zero-shot": evaluate(logits, labels), "CoOp": evaluate(3 * logits, labels)}


def test_side_by_side_png_has_the_expected_size(reports, tmp_path):
    path = plot_reliability_diagrams(reports, tmp_path / "figs" / "reliability.png", title="demo", dpi=80)
    assert path == tmp_path / "figs" / "reliability.png" and path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (4 * 2 * 80, 5 * 80)  # default panel 4 x 5 inches, two models


def test_single_model_png_with_custom_panel_size(reports, tmp_path):
    path = plot_reliability_diagram(reports["CoOp"], str(tmp_path / "coop.png"), name="CoOp", panel_size=(3, 4))
    with Image.open(path) as image:
        assert image.size == (300, 400)


def test_empty_bins_are_drawn(tmp_path):
    report = evaluate(torch.tensor([[4.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))  # two non-empty bins of ten
    assert report.reliability.counts.count(0) == 8
    assert plot_reliability_diagram(report, tmp_path / "sparse.png").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "out.jpg"}, "Expected `path`"),
        ({"dpi": 0}, "Expected `dpi`"),
        ({"panel_size": (4, -1)}, "Expected `panel_size`"),
    ],
)
def test_bad_arguments_raise(reports, tmp_path, kwargs, message):
    arguments = {"path": tmp_path / "x.png"} | kwargs
    with pytest.raises(ValueError, match=message):
        plot_reliability_diagrams(reports, **arguments)


def test_empty_or_wrong_reports_raise(reports, tmp_path):
    with pytest.raises(ValueError, match="Expected `reports`"):
        plot_reliability_diagrams({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"Expected `reports\['bad'\]`"):
        plot_reliability_diagrams({"bad": reports["CoOp"].to_dict()}, tmp_path / "x.png")


def test_smooth_curve_and_band_are_drawn_from_the_report(tmp_path):
    """The axes hold the stored curve and band exactly; old reports (no curve) still plot, without it."""
    from matplotlib.figure import Figure

    from calprompt.metrics import EvaluationReport
    from calprompt.report import reliability

    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (600,), generator=generator)
    logits = 3 * torch.randn(600, 5, generator=generator)
    report = evaluate(logits, labels, bootstrap=30, seed=2)
    axes = Figure().subplots()
    reliability._draw_reliability(axes, report, smooth=True)
    line = next(line for line in axes.get_lines() if line.get_label() == "smoothed accuracy")
    assert list(line.get_xdata()) == report.smooth_reliability.mesh
    assert list(line.get_ydata()) == report.smooth_reliability.accuracy
    band = next(c for c in axes.collections if c.get_label().endswith("band"))
    assert band.get_label() == "95% band"
    assert "[" in reliability._headline(report) and "smECE" in reliability._headline(report)
    old = EvaluationReport.from_dict(
        {key: value for key, value in report.to_dict().items() if key not in ("smooth_reliability", "intervals")}
    )
    assert plot_reliability_diagram(old, tmp_path / "old.png").is_file()
    assert plot_reliability_diagram(report, tmp_path / "new.png").is_file()
