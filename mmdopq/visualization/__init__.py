"""Plots of sweep results (matplotlib, no display needed)."""

from .result_plots import plot_metric_vs_bits, plot_mosf_scales

__all__ = ['plot_metric_vs_bits', 'plot_mosf_scales']
