"""Publication outputs from evaluation reports: reliability diagrams and paper-style tables."""

from calprompt.report.reliability import plot_reliability_diagram, plot_reliability_diagrams
from calprompt.report.tables import base_novel_table, format_cell, mean_std

__all__ = ["base_novel_table", "format_cell", "mean_std", "plot_reliability_diagram", "plot_reliability_diagrams"]
