"""Plots of studies and ticket searches (matplotlib, Agg backend)."""

from .reports import plot_compare, plot_pareto, plot_rounds

__all__ = ["plot_compare", "plot_pareto", "plot_rounds"]
