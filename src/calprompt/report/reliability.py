"""Reliability diagrams with confidence histograms, one panel per model, drawn headless.

Draws from an :class:`~calprompt.metrics.EvaluationReport` alone (its per-bin data and, when stored, the smooth-ECE
reliability curve with its bootstrap band), so stored JSON results can be plotted without the logits. matplotlib is
imported lazily and used through ``Figure`` directly, not ``pyplot``: no display is needed and the caller's global
backend is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calprompt._validation import check_positive_int, fail
from calprompt.metrics import EvaluationReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Reliability axes are this many times taller than the histogram under them.
_HEIGHT_RATIOS = (3, 1)
_SUFFIXES = (".png", ".pdf", ".svg")


def _check_panel_size(panel_size: Any) -> tuple[float, float]:
    ok = isinstance(panel_size, tuple | list) and len(panel_size) == 2
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in panel_size)
    if not ok:
        fail("panel_size", "a (width, height) pair of positive numbers in inches", panel_size)
    return float(panel_size[0]), float(panel_size[1])


def _draw_smooth(axes: Axes, report: EvaluationReport) -> None:
    """The kernel-smoothed accuracy curve of smooth ECE and, when the report has one, its bootstrap band."""
    curve = report.smooth_reliability
    if curve.lower is not None and curve.upper is not None:
        level = f"{100 * report.intervals.level:.0f}% " if report.intervals is not None else ""
        axes.fill_between(curve.mesh, curve.lower, curve.upper, color="tab:orange", alpha=0.25, label=f"{level}band")
    axes.plot(curve.mesh, curve.accuracy, color="tab:orange", linewidth=1.5, label="smoothed accuracy")


def _draw_reliability(axes: Axes, report: EvaluationReport, smooth: bool, legend: bool = True) -> None:
    """Accuracy bars per bin, the gap to the mean confidence shaded, and each bin's sample count above its bar."""
    bins = report.reliability
    width = 1.0 / report.n_bins
    centres = [lo + width / 2 for lo in bins.edges[:-1]]
    filled = [i for i, count in enumerate(bins.counts) if count]
    x = [centres[i] for i in filled]
    acc = [bins.accuracy[i] for i in filled]
    conf = [bins.confidence[i] for i in filled]
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    axes.bar(x, acc, width=width, color="tab:blue", edgecolor="black", linewidth=0.6, label="accuracy")
    gaps = [c - a for a, c in zip(acc, conf, strict=True)]
    axes.bar(x, gaps, bottom=acc, width=width, color="tab:red", alpha=0.3, edgecolor="tab:red", hatch="//", label="gap")
    for i, centre in zip(filled, x, strict=True):
        top = max(bins.accuracy[i], bins.confidence[i])
        axes.text(centre, min(top + 0.02, 0.97), str(bins.counts[i]), ha="center", va="bottom", fontsize=6)
    if smooth and report.smooth_reliability is not None:
        _draw_smooth(axes, report)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_ylabel("accuracy")
    if legend:
        axes.legend(loc="upper left", fontsize=7)


def _draw_histogram(axes: Axes, report: EvaluationReport, legend: bool = True) -> None:
    """Fraction of samples per confidence bin, with the overall accuracy and mean confidence marked (their values
    in the legend; without one, the panel's title carries them)."""
    bins = report.reliability
    width = 1.0 / report.n_bins
    fractions = [count / report.n for count in bins.counts]
    axes.bar([lo + width / 2 for lo in bins.edges[:-1]], fractions, width=width, color="grey", edgecolor="black")
    mean_conf = sum(c * n for c, n in zip(bins.confidence, bins.counts, strict=True) if n) / report.n
    accuracy = f"accuracy {report.accuracy:.2f}" if legend else "overall accuracy"
    confidence = f"mean confidence {mean_conf:.2f}" if legend else "mean confidence"
    axes.axvline(report.accuracy, color="tab:blue", linestyle="-", label=accuracy)
    axes.axvline(mean_conf, color="tab:red", linestyle="--", label=confidence)
    axes.set_xlim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("fraction")
    if legend:
        axes.legend(loc="upper left", fontsize=6)


def _headline(report: EvaluationReport) -> str:
    """``ECE 4.21% [3.80, 4.66]  smECE 3.90%  acc 71.2%``: the interval and smooth ECE only where stored."""
    ece = f"ECE {100 * report.ece:.2f}%"
    if report.intervals is not None:
        low, high = report.intervals.ece
        ece += f" [{100 * low:.2f}, {100 * high:.2f}]"
    smooth = f"  smECE {100 * report.smooth_ece:.2f}%" if report.smooth_ece is not None else ""
    return f"{ece}{smooth}  acc {100 * report.accuracy:.1f}%"


def plot_reliability_diagrams(
    reports: Mapping[str, EvaluationReport],
    path: str | Path,
    *,
    title: str | None = None,
    panel_size: tuple[float, float] = (4.0, 5.0),
    dpi: int = 100,
    smooth: bool = True,
    columns: int | None = None,
) -> Path:
    """Save one reliability diagram + confidence histogram per model in a grid, and return the file path.

    Each panel's title shows the model name, its ECE (with its bootstrap interval when the report has one), smooth
    ECE and accuracy in percent. With ``smooth`` (default) the smooth-ECE reliability curve and its bootstrap band
    are drawn over the bins when the report holds them (reports stored before they existed simply lack them).
    ``columns`` panels a row (default: all in one row); with more than one panel the figure has one legend, over
    the grid, instead of one per panel. The figure is exactly ``(panel_size[0] * c, panel_size[1] * r)`` inches
    for c columns and r rows at ``dpi`` (no tight bounding box), so a PNG has ``(round(w * dpi), round(h * dpi))``
    pixels and its width never depends on how many models there are. The format follows the suffix: .png, .pdf or
    .svg.
    """
    if not isinstance(reports, Mapping) or not reports:
        fail("reports", "a non-empty mapping of model name -> EvaluationReport", reports)
    for name, report in reports.items():
        if not isinstance(report, EvaluationReport):
            fail(f"reports[{name!r}]", "an EvaluationReport (see calprompt.metrics.evaluate)", type(report).__name__)
    width, height = _check_panel_size(panel_size)
    check_positive_int(dpi, "dpi")
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        fail("path", f"a file name ending in one of {', '.join(_SUFFIXES)}", str(path))

    from matplotlib.figure import Figure  # lazy: plotting is optional at import time

    n_columns = len(reports) if columns is None else min(check_positive_int(columns, "columns"), len(reports))
    n_rows = -(-len(reports) // n_columns)
    shared = len(reports) > 1
    if shared:
        figure, cells = _grid_figure(width, height, n_columns, n_rows, dpi, bool(title))
    else:
        figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
        cells = [figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": _HEIGHT_RATIOS})]
    for index, (name, report) in enumerate(reports.items()):
        top, bottom = cells[index]
        _draw_reliability(top, report, smooth, legend=not shared)
        _draw_histogram(bottom, report, legend=not shared)
        headline = _headline(report).replace("  smECE", "\nsmECE") if shared else _headline(report)
        top.set_title(f"{name}\n{headline}", fontsize=8 if shared else 9)
        if shared:
            top.tick_params(labelbottom=False)
            if index % n_columns:  # the first column names the y axes for its row
                top.set_ylabel("")
                bottom.set_ylabel("")
    for unused in cells[len(reports) :]:
        for axes in unused:
            axes.set_visible(False)
    if shared:
        _figure_legend(figure, *cells[0], n_columns)
    if title:
        figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


# Fixed margins of a grid, in inches: above it (title), below it (legend), left (y labels), around each panel
# (its three-line title above, the histogram's x labels below). A grid of 20+ axes is laid out by hand: matplotlib's
# constrained layout measures every text several times, which made drawing a report's grids take twice as long.
_TOP, _TOP_TITLED, _LEGEND, _LEFT, _RIGHT, _PANEL_TOP, _PANEL_BOTTOM = 0.05, 0.35, 0.5, 0.7, 0.1, 0.6, 0.5


def _grid_figure(width: float, height: float, n_columns: int, n_rows: int, dpi: int, titled: bool) -> tuple[Any, list]:
    """A figure of ``n_rows`` x ``n_columns`` panels, each a reliability axes over a histogram axes: (figure, [(top,
    bottom) per panel, row by row]). Unused cells of the last row stay empty."""
    from matplotlib.figure import Figure

    fig_w, fig_h = width * n_columns, height * n_rows
    figure = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    top = 1 - ((_TOP_TITLED if titled else _TOP) + _PANEL_TOP) / fig_h
    outer = figure.add_gridspec(
        n_rows,
        n_columns,
        left=_LEFT / fig_w,
        right=1 - _RIGHT / fig_w,
        top=top,
        bottom=(_LEGEND + _PANEL_BOTTOM) / fig_h,
        wspace=0.28,
        hspace=(_PANEL_TOP + _PANEL_BOTTOM) / (height - _PANEL_TOP - _PANEL_BOTTOM),
    )
    cells = []
    for index in range(n_rows * n_columns):
        inner = outer[index // n_columns, index % n_columns].subgridspec(
            2, 1, height_ratios=_HEIGHT_RATIOS, hspace=0.08
        )
        reliability = figure.add_subplot(inner[0])
        cells.append((reliability, figure.add_subplot(inner[1], sharex=reliability)))
    return figure, cells


def _figure_legend(figure: Any, reliability: Axes, histogram: Axes, n_columns: int) -> None:
    """One legend for every panel, from the first panel's artists (the same in each), under the grid."""
    handles, labels = reliability.get_legend_handles_labels()
    more = histogram.get_legend_handles_labels()
    handles, labels = handles + more[0], labels + more[1]
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8 if n_columns > 2 else 7)


def plot_reliability_diagram(
    report: EvaluationReport,
    path: str | Path,
    *,
    name: str = "model",
    title: str | None = None,
    panel_size: tuple[float, float] = (4.0, 5.0),
    dpi: int = 100,
    smooth: bool = True,
) -> Path:
    """One model's reliability diagram and confidence histogram (see :func:`plot_reliability_diagrams`)."""
    return plot_reliability_diagrams({name: report}, path, title=title, panel_size=panel_size, dpi=dpi, smooth=smooth)
