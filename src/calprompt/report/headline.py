"""Headline figures: where each objective (and each post-hoc calibrator) moved each method.

Per dataset and protocol (and for the average over datasets when there are several), two PNGs:

- *movement*: novel ECE against the harmonic mean of base and novel accuracy, one point per method and objective, an
  arrow from each method's ``none`` point to the same method with each objective (down and to the right is better);
  for runs without novel classes (the few-shot protocol) ECE against accuracy on their one test split;
- *ECE bars*: base and novel ECE of none / ours / TS / DAC, grouped by method (DAC only on novel classes, where it
  acts), zero-shot CLIP as a dashed line.

Values are the rows' means over seeds, read from the same `Results` as the tables, so figure and tables agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from calprompt.conventions import BASE, NOVEL
from calprompt.report.cells import RowKey
from calprompt.report.tables import Results, mean_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_SIZE, _DPI = (5.8, 5.0), 100  # 580 x 500 px: two side by side fit a 1,280 px page
_MARKERS = {"none": "o", "ours": "*", "mbls": "s", "zs-norm": "D", "penalty": "^", "ls": "v", "focal": "P"}
_SPARE_MARKERS = ("X", "h", "<", ">", "p", "d", "8")
# (bar label, train-time calibration, post-hoc suffix, colour)
_VARIANTS = (
    ("none", "none", "", "#9e9e9e"),
    ("ours", "ours", "", "tab:green"),
    ("TS", "none", "TS", "tab:blue"),
    ("DAC", "none", "DAC", "tab:purple"),
)
ZERO_SHOT = "zeroshot"


@dataclass(frozen=True)
class Scope:
    """One headline: a dataset (None: the average over datasets) under one protocol, the rows it covers, and whether
    they were evaluated on novel classes (read from the runs' files, never from the protocol's name)."""

    dataset: str | None
    protocol: str
    keys: tuple[RowKey, ...]
    title: str
    has_novel: bool


def scopes(results: Results) -> list[Scope]:
    """Every (dataset, protocol) with at least one row, then the averages when there are several datasets."""
    by_protocol: dict[str, list[RowKey]] = {}
    for key in results.rows:
        protocol = str(results.configs.get(key.train_key, {}).get("protocol", ""))
        by_protocol.setdefault(protocol, []).append(key)
    datasets: list[str | None] = list(results.datasets) + ([None] if len(results.datasets) > 1 else [])
    out = []
    for dataset in datasets:
        for protocol, keys in by_protocol.items():
            held = tuple(k for k in keys if dataset is None or dataset in results.cells[k])
            if held:
                where = dataset or f"average over {len(results.datasets)} datasets"
                novel = any(mean_value(results, k, dataset, NOVEL, "ece") is not None for k in held)
                out.append(Scope(dataset, protocol, held, f"{where} · {protocol}" if protocol else where, novel))
    return out


def _families(keys: Sequence[RowKey]) -> list[RowKey]:
    """Each method (with its other settings) once, as its ``none`` row, zero-shot left out (it is a reference)."""
    seen = dict.fromkeys(RowKey(k.method, "none", "", k.settings) for k in keys if k.method != ZERO_SHOT)
    return list(seen)


def _colour(index: int) -> str:
    return f"C{index % 10}"


def _marker(calibration: str, others: list[str]) -> str:
    if calibration in _MARKERS:
        return _MARKERS[calibration]
    if calibration not in others:
        others.append(calibration)
    return _SPARE_MARKERS[others.index(calibration) % len(_SPARE_MARKERS)]


def _point(results: Results, scope: Scope, key: RowKey) -> tuple[float, float] | None:
    """(accuracy, ECE) in %: HM and novel ECE under base-to-novel, accuracy and ECE of the one split otherwise."""
    (x_split, x_field), (y_split, y_field) = (
        (("hm", "accuracy"), (NOVEL, "ece")) if scope.has_novel else ((BASE, "accuracy"), (BASE, "ece"))
    )
    x = mean_value(results, key, scope.dataset, x_split, x_field)
    y = mean_value(results, key, scope.dataset, y_split, y_field)
    return None if x is None or y is None else (100 * x, 100 * y)


def draw_movement(axes: Axes, results: Results, scope: Scope) -> None:
    """The scatter with arrows from each method's ``none`` to its objectives (see the module docstring)."""
    from matplotlib.lines import Line2D

    trained = [k for k in scope.keys if not k.posthoc]
    others: list[str] = []
    method_handles, objective_handles = [], {}
    for index, family in enumerate(_families(trained)):
        colour = _colour(index)
        start = _point(results, scope, family)
        for key in (k for k in trained if RowKey(k.method, "none", "", k.settings) == family):
            point = _point(results, scope, key)
            if point is None:
                continue
            marker = _marker(key.calibration, others)
            size = 130 if marker == "*" else 50
            axes.scatter(*point, color=colour, marker=marker, s=size, edgecolor="black", linewidth=0.5, zorder=3)
            objective_handles.setdefault(
                key.calibration, Line2D([], [], color="#555", marker=marker, linestyle="", markersize=7)
            )
            if start is not None and key != family:
                arrow = {"arrowstyle": "->", "color": colour, "lw": 1.2, "alpha": 0.8, "shrinkA": 5, "shrinkB": 6}
                axes.annotate("", xy=point, xytext=start, arrowprops=arrow, zorder=2)
        method_handles.append(Line2D([], [], color=colour, marker="o", linestyle="", markersize=7, label=family.label))
    zero_shot = next((k for k in trained if k.method == ZERO_SHOT), None)
    if zero_shot is not None and (point := _point(results, scope, zero_shot)) is not None:
        axes.scatter(*point, color="black", marker="X", s=60, zorder=3)
        method_handles.append(Line2D([], [], color="black", marker="X", linestyle="", markersize=7, label="zero-shot"))
    axes.set_xlabel("harmonic mean of base and novel accuracy (%)" if scope.has_novel else "accuracy (%)")
    axes.set_ylabel("novel ECE (%)" if scope.has_novel else "ECE (%)")
    axes.grid(alpha=0.3)
    axes.text(0.99, 0.99, "better: right and down", transform=axes.transAxes, ha="right", va="top", fontsize=8)
    objectives = [
        Line2D([], [], color="#555", marker=h.get_marker(), linestyle="", markersize=7, label=f"{name} (objective)")
        for name, h in objective_handles.items()
    ]
    axes.figure.legend(handles=method_handles + objectives, loc="outside lower center", ncol=4, fontsize=7)


def draw_ece_bars(axes_list: Sequence[Axes], results: Results, scope: Scope) -> None:
    """Grouped bars of ECE per method: none / ours / TS / DAC, base and novel (one panel each)."""
    families = _families(scope.keys)
    splits = (BASE, NOVEL) if scope.has_novel else (BASE,)
    width = 0.8 / len(_VARIANTS)
    zero_shot = next((k for k in scope.keys if k.method == ZERO_SHOT and not k.posthoc), None)
    for axes, split in zip(axes_list, splits, strict=True):
        for v, (label, calibration, posthoc, colour) in enumerate(_VARIANTS):
            if split == BASE and posthoc == "DAC":
                continue  # DAC is the identity on base classes
            xs, heights = [], []
            for i, family in enumerate(families):
                key = RowKey(family.method, calibration, posthoc, family.settings)
                value = mean_value(results, key, scope.dataset, split, "ece")
                if value is not None:
                    xs.append(i + (v - (len(_VARIANTS) - 1) / 2) * width)
                    heights.append(100 * value)
            axes.bar(xs, heights, width=width, color=colour, edgecolor="black", linewidth=0.4, label=label)
        if zero_shot is not None and (value := mean_value(results, zero_shot, scope.dataset, split, "ece")):
            axes.axhline(100 * value, color="black", linestyle="--", linewidth=1, label="zero-shot")
        name = "ECE" if not scope.has_novel else f"{split} ECE"
        axes.set_ylabel(f"{name} (%)")
        axes.set_xticks(range(len(families)), [f.label for f in families], rotation=30, ha="right", fontsize=8)
        axes.grid(axis="y", alpha=0.3)
    handles, labels = axes_list[-1].get_legend_handles_labels()
    axes_list[0].figure.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=8)


def headline_figures(results: Results, out_dir: Path) -> list[tuple[Scope, str, Path]]:
    """Draw both figures of every scope into ``out_dir``; (scope, caption, PNG path) for each."""
    from matplotlib.figure import Figure  # lazy, as in calprompt.report.reliability

    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = []
    for n, scope in enumerate(scopes(results)):
        figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
        draw_movement(figure.subplots(), results, scope)
        figure.suptitle(f"{scope.title}: where each objective moves each method", fontsize=10)
        path = out_dir / f"headline-{n}-movement.png"
        figure.savefig(path, dpi=_DPI)
        drawn.append((scope, f"{scope.title}: accuracy and ECE of each method x objective", path))
        figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
        axes = figure.subplots(2 if scope.has_novel else 1, 1, sharex=True, squeeze=False)[:, 0]
        draw_ece_bars(list(axes), results, scope)
        figure.suptitle(f"{scope.title}: ECE of none / ours / TS / DAC", fontsize=10)
        path = out_dir / f"headline-{n}-ece.png"
        figure.savefig(path, dpi=_DPI)
        splits = "base and novel ECE" if scope.has_novel else "ECE"
        drawn.append((scope, f"{scope.title}: {splits} per method", path))
    return drawn
