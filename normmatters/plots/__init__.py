"""Figures drawn from logged run tables only (never models or the loop); the numbers and verdicts
they show are computed in normmatters.experiments."""
from .sweep import plot_sweep
from .norm_dynamics import STATS, channel_norm_stats, plot_norm_dynamics
from .wd_figure import ARM_COLORS, arm_colors, plot_wd_arms

__all__ = ["ARM_COLORS", "STATS", "arm_colors", "channel_norm_stats", "plot_norm_dynamics", "plot_sweep", "plot_wd_arms"]
