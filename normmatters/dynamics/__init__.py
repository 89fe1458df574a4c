"""Weight-norm dynamics (PAPER.md §1): norms, effective step size eta/||w||^2, angular update."""
from normmatters.dynamics.weight_stats import AngleProbe, angle_between, channel_norm_rows, layer_rows, per_channel_norms
from normmatters.scale_invariant import scale_invariant_weights  # defined below optim and dynamics, which share it

__all__ = ["AngleProbe", "angle_between", "channel_norm_rows", "layer_rows", "per_channel_norms", "scale_invariant_weights"]
