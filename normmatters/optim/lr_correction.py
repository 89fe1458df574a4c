"""Weight decay replaced by a per-channel learning-rate correction (PAPER.md §2, "WD off + LR correction").

Each output channel w of a scale-invariant weight takes its step with

    η̂ = η · ‖w‖² / ‖w_WD‖²                                              (PAPER.md §2)

where η is the (scheduled) LR of its parameter group, ‖w‖ the channel's norm in this run just
before the step and ‖w_WD‖ the same channel's norm in the reference (WD-on) run at the matching
point of training (``reference_timing``, see :mod:`normmatters.optim.reference`; the authors'
is the norm logged at the end of the current epoch). Since the direction w/‖w‖ moves with the
effective step η/‖w‖² (PAPER.md §1), this gives every channel the effective step η/‖w_WD‖² it had
in the WD-on run.

The hook computes s_c = ‖w_c‖²/‖w_WD,c‖² before each step and hands it to the optimizer
(:class:`normmatters.optim.ChannelSGD`), which forms the corrected step and adds it to the weight
once, so no precision is lost for any s_c a float32 weight can take.

Where the factor enters, with momentum (``mode``):

- ``"update"`` (the authors' ``SGDWDMimic``, the published method): the momentum buffer holds
  raw gradients and the *current* s_c multiplies the whole step, w ← w − η·s_c(t)·Σ μ^k g(t−k).
- ``"gradient"``: s_c multiplies the gradient before it enters the buffer,
  w ← w − η·Σ μ^k s_c(t−k)·g(t−k), i.e. the ``v ← μv + η̂g`` form of a per-channel LR.

Both equal SGD with LR η̂ without momentum. They differ when ‖w_c‖ moves fast: a raw gradient
scales as 1/‖w_c‖, so in "update" mode a buffer filled while the norm was small, times a factor
∝ ‖w_c‖² now, gives a relative step that grows with the norm; in "gradient" mode each buffered
term keeps the relative size it had when it was added.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .channel_sgd import ChannelSGD
from .reference import ReferenceNorms

MODES = ("update", "gradient")


@torch.no_grad()
def channel_sq_norms(weight: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each output channel (dim 0), in the weight's dtype."""
    return weight.detach().flatten(1).pow(2).sum(dim=1)


def correction_scale(current_norms: torch.Tensor, reference_norms: torch.Tensor) -> torch.Tensor:
    """s = ‖w‖² / ‖w_ref‖² per channel: the factor η̂/η of the LR correction."""
    return current_norms.pow(2) / reference_norms.pow(2)


class LRCorrection:
    """Step hook: per-channel LR η̂ = η‖w‖²/‖w_ref‖² on the scale-invariant weights.

    ``params``: {name: Parameter} (normally ``scale_invariant_weights(model)``);
    ``reference``: their reference norms; ``optimizer``: a :class:`ChannelSGD` over them.
    Call order per iteration (see :mod:`.hooks`): ``before_step(k, S)`` → ``optimizer.step()``
    → ``after_step()``. ``last_scale`` holds {name: s_c tensor} of the last step (for logging).
    """

    def __init__(self, params: Mapping[str, torch.nn.Parameter], reference: ReferenceNorms,
                 optimizer: torch.optim.Optimizer, mode: str = "update"):
        if mode not in MODES:
            raise ValueError(f"lr_correction_mode={mode!r} is not valid; valid: {', '.join(MODES)}")
        if not isinstance(optimizer, ChannelSGD):
            raise ValueError(f"lr_correction needs a normmatters.optim.ChannelSGD optimizer (per-channel LRs); "
                             f"got {type(optimizer).__name__}")
        self.params = dict(params)
        self.reference = reference
        self.optimizer = optimizer
        self.mode = mode
        self.epoch: int | None = None
        self.last_scale: dict[str, torch.Tensor] = {}

    def on_epoch_start(self, epoch: int) -> None:
        if not 1 <= epoch <= self.reference.epochs:
            raise ValueError(f"lr_correction: reference run {self.reference.path} serves epochs "
                             f"1..{self.reference.epochs}, training reached epoch {epoch}")
        self.epoch = epoch

    @torch.no_grad()
    def before_step(self, step_in_epoch: int, steps_per_epoch: int) -> None:
        if self.epoch is None:
            raise RuntimeError("LRCorrection.before_step called before on_epoch_start")
        frac = step_in_epoch / steps_per_epoch
        where = "step" if self.mode == "update" else "gradient"
        for name, p in self.params.items():
            ref = self.reference.at(name, self.epoch, frac, like=p)
            self.last_scale[name] = channel_sq_norms(p) / ref.pow(2)
            self.optimizer.set_channel_lr(p, self.last_scale[name], where)

    def after_step(self) -> None:
        """Nothing to do: the optimizer applied the factors inside its step."""
