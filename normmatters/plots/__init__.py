"""Figures and claims reports, computed from logged run tables only (never models or the loop)."""
from .claims import (MARGIN, PAPER_VERDICT, TRACK_TOL, claims_markdown, decide, first_milestone, gap_interval,
                     paired_final_gaps, paired_markdown, paper_verdict, tracking_gap, wd_claims)
from .sweep import plot_sweep
from .norm_dynamics import STATS, channel_norm_stats, plot_norm_dynamics
from .wd_figure import (ARM_COLORS, ARMS, PAPER_FINAL, arm_colors, canonical_arm, load_arms, load_run, lr_milestones,
                        paired_gap_curve, plot_wd_arms, t_interval)

__all__ = ["ARMS", "ARM_COLORS", "MARGIN", "PAPER_FINAL", "PAPER_VERDICT", "STATS", "TRACK_TOL", "arm_colors",
           "canonical_arm", "channel_norm_stats", "claims_markdown", "decide", "first_milestone", "gap_interval",
           "load_arms", "load_run", "lr_milestones", "paired_final_gaps", "paired_gap_curve", "paired_markdown",
           "paper_verdict", "plot_norm_dynamics", "plot_sweep", "plot_wd_arms", "t_interval", "tracking_gap", "wd_claims"]
