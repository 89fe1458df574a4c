"""Weight decay replaced by a per-channel learning-rate correction (PAPER.md §2, "WD off + LR correction").

Each output channel w of a scale-invariant weight takes its step with

    η̂ = η · ‖w‖² / ‖w_WD‖²                                              (PAPER.md §2)

where η is the (scheduled) LR of its parameter group, ‖w‖ the channel's norm in this run just
before the step and ‖w_WD‖ the same channel's norm in the reference (WD-on) run at the same
point of training (interpolated within the epoch, see :mod:`normmatters.optim.reference`).
Since the direction w/‖w‖ moves with the effective step η/‖w‖² (PAPER.md §1), this gives every
channel the effective step η/‖w_WD‖² it had in the WD-on run.

Implementation: ``torch.optim.SGD`` supports one LR per parameter, not per channel, so the hook
lets the optimizer take its ordinary step and rescales each channel's update afterwards:

    before the step:  s_c = ‖w_c‖² / ‖w_ref,c‖²,  w_old = w
    after the step:   w  ←  w_old + s_c · (w − w_old)

For ``torch.optim.SGD`` (plain, momentum, Nesterov, dampening, coupled weight decay) the update is
``−η · d`` with a direction d that does not depend on η (the momentum buffer stores gradients, not
η-scaled steps), so this is *exactly* SGD with the per-channel LR η̂ = s_c·η, up to one rounding.
With weight decay λ on these weights (not the paper's arm: there they get none), the decay term
λw is part of d and is scaled too, i.e. the channel decays with η̂λ instead of ηλ — exactly what a
per-channel LR would do to coupled L2 decay; the momentum buffer is left untouched in every case.
It would *not* be a per-channel LR for an optimizer whose state holds η-scaled steps (e.g. the
``v ← μv + ηg`` momentum form) or whose step is not linear in η; use it with SGD.

Where the factor enters, with momentum (``mode``):

- ``"update"`` (default; the authors' ``SGDWDMimic``): the momentum buffer holds raw gradients
  and the *current* s_c multiplies the whole step, w ← w − η·s_c(t)·Σ μ^k g(t−k).
- ``"gradient"``: s_c multiplies the gradient before it enters the buffer,
  w ← w − η·Σ μ^k s_c(t−k)·g(t−k), i.e. the ``v ← μv + η̂g`` form of a per-channel LR.

Both equal SGD with LR η̂ without momentum. They differ when ‖w_c‖ moves fast: a raw gradient
scales as 1/‖w_c‖, so in "update" mode a buffer filled while the norm was small, times a factor
∝ ‖w_c‖² now, gives a relative step that grows with the norm (a feedback loop); in "gradient" mode
each buffered term keeps the relative size it had when it was added.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .reference import ReferenceNorms

MODES = ("update", "gradient")


@torch.no_grad()
def channel_sq_norms(weight: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each output channel (dim 0), in the weight's dtype."""
    return weight.detach().flatten(1).pow(2).sum(dim=1)


def correction_scale(current_norms: torch.Tensor, reference_norms: torch.Tensor) -> torch.Tensor:
    """s = ‖w‖² / ‖w_ref‖² per channel: the factor η̂/η of the LR correction."""
    return current_norms.pow(2) / reference_norms.pow(2)


def _per_channel(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scale.view(-1, *([1] * (like.ndim - 1)))


class LRCorrection:
    """Step hook: per-channel LR η̂ = η‖w‖²/‖w_ref‖² on the scale-invariant weights.

    ``params``: {name: Parameter} (normally ``scale_invariant_weights(model)``);
    ``reference``: their reference norms. Call order per iteration (see :mod:`.hooks`):
    ``before_step(k, S)`` → ``optimizer.step()`` → ``after_step()``. After a step,
    ``last_scale`` holds {name: s_c tensor} (useful for logging).
    """

    def __init__(self, params: Mapping[str, torch.nn.Parameter], reference: ReferenceNorms, mode: str = "update"):
        if mode not in MODES:
            raise ValueError(f"lr_correction_mode={mode!r} is not valid; valid: {', '.join(MODES)}")
        self.params = dict(params)
        self.reference = reference
        self.mode = mode
        self.epoch: int | None = None
        self.last_scale: dict[str, torch.Tensor] = {}
        self._old: dict[str, torch.Tensor] = {}

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
        for name, p in self.params.items():
            ref = self.reference.at(name, self.epoch, frac, like=p)
            self.last_scale[name] = channel_sq_norms(p) / ref.pow(2)
            if self.mode == "gradient":
                if p.grad is not None:
                    p.grad.mul_(_per_channel(self.last_scale[name], p.grad))
            else:
                self._old[name] = p.detach().clone()

    @torch.no_grad()
    def after_step(self) -> None:
        if self.mode == "gradient":
            return
        if not self._old:
            raise RuntimeError("LRCorrection.after_step called without before_step")
        for name, p in self.params.items():
            old = self._old[name]
            p.sub_(old).mul_(_per_channel(self.last_scale[name], p)).add_(old)
        self._old = {}
