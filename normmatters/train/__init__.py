"""Training: the loop, checkpoints, the run logger and start-up validation."""
from normmatters.train.loop import train

__all__ = ["train"]
