"""Figures and claims reports, computed from logged run tables only (never models or the loop)."""
from .claims import claims_markdown, first_milestone, paired_final_gaps, paired_markdown, paper_matches, wd_claims
from .norm_dynamics import plot_norm_dynamics, rms_channel_norm
from .wd_figure import (ARM_COLORS, ARMS, PAPER_FINAL, canonical_arm, load_arms, load_run,
                        plot_wd_arms)

__all__ = ["ARMS", "ARM_COLORS", "PAPER_FINAL", "canonical_arm", "claims_markdown", "first_milestone",
           "load_arms", "load_run", "paired_final_gaps", "paired_markdown", "paper_matches", "plot_norm_dynamics", "plot_wd_arms", "rms_channel_norm",
           "wd_claims"]
