"""Publication figures from evaluation reports: reliability diagrams with confidence histograms."""

from calprompt.report.reliability import plot_reliability_diagram, plot_reliability_diagrams

__all__ = ["plot_reliability_diagram", "plot_reliability_diagrams"]
