"""SGD with a per-output-channel learning-rate multiplier (PAPER.md §2, the LR correction's optimizer).

``torch.optim.SGD`` takes one LR per parameter group. The LR correction needs one per output
channel, η̂_c = s_c·η, and it must be applied as part of the step, not after it: scaling an
already-taken float32 step loses it when s_c is large (the plain step η·d is then below the
resolution of w and rounds to nothing before it is multiplied). Here the corrected step is formed
first and added to the weight once:

    d  = g + λ·w                          (coupled weight decay, as in SGD)
    b ← μ·b + (1 − τ)·d                   (momentum buffer; b = d at the first step)
    d  = g + μ·b  (Nesterov)  or  b
    w ← w − η · s ⊙ d                     (where="step": the published rule, the factor on the whole step)

or, with ``where="gradient"``, the factor enters before the buffer (d ← s ⊙ d, then the usual
step). Without multipliers the step is ``torch.optim.SGD``'s own (the parent's ``step``), so a
run that sets none is plain SGD, bit for bit.

``zero_nan=True`` is the authors' NaN handling (their ``SGDWDMimic``): entries of a step that are NaN
are set to zero, so those weights do not move. As there, the plain step zeroes them in the momentum
buffer itself (their step is the buffer), the corrected step only in the step (the buffer keeps
them). Where no entry is NaN the arithmetic is the same as without it, bit for bit.
"""
from __future__ import annotations

import torch

WHERE = ("step", "gradient")


class ChannelSGD(torch.optim.SGD):
    """``torch.optim.SGD`` plus :meth:`set_channel_lr`: per-channel LR multipliers for some parameters."""

    def __init__(self, params, zero_nan: bool = False, **kwargs):
        super().__init__(params, **kwargs)
        self.zero_nan = bool(zero_nan)
        self._channel_lr: dict[torch.nn.Parameter, tuple[torch.Tensor, str]] = {}

    def set_channel_lr(self, param: torch.nn.Parameter, scale: torch.Tensor, where: str = "step") -> None:
        """Multiply the LR of each output channel (dim 0) of ``param`` by ``scale`` from the next step on."""
        if where not in WHERE:
            raise ValueError(f"where={where!r} is not valid; valid: {', '.join(WHERE)}")
        if scale.ndim != 1 or scale.numel() != param.shape[0]:
            raise ValueError(f"channel LR scale has shape {tuple(scale.shape)}; expected ({param.shape[0]},) "
                             f"for a parameter of shape {tuple(param.shape)}")
        view = scale.detach().to(device=param.device, dtype=param.dtype).view(-1, *([1] * (param.ndim - 1)))
        self._channel_lr[param] = (view, where)

    def clear_channel_lr(self) -> None:
        self._channel_lr.clear()

    @torch.no_grad()
    def step(self, closure=None):
        if not (self._channel_lr or self.zero_nan):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group.get("maximize") or group.get("differentiable"):
                raise ValueError("ChannelSGD with channel LRs supports neither maximize nor differentiable")
            for p in group["params"]:
                if p.grad is not None:
                    self._step_param(p, group)
        return loss

    def _step_param(self, p: torch.nn.Parameter, group: dict) -> None:
        scale, where = self._channel_lr.get(p, (None, "step"))
        d = p.grad
        if group["weight_decay"] != 0:
            d = d.add(p, alpha=group["weight_decay"])
        if scale is not None and where == "gradient":
            d = d * scale
        momentum = group["momentum"]
        if momentum != 0:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.clone(d).detach()
            else:
                buf.mul_(momentum).add_(d, alpha=1 - group["dampening"])
            d = d.add(buf, alpha=momentum) if group["nesterov"] else buf
        if scale is not None and where == "step":
            if self.zero_nan:  # the weight stays where the corrected step is NaN
                p.copy_(torch.where(torch.isnan(d * scale), p, p.addcmul(d, scale, value=-group["lr"])))
            else:
                p.addcmul_(d, scale, value=-group["lr"])
        else:
            if self.zero_nan:
                d.masked_fill_(torch.isnan(d), 0.0)
            p.add_(d, alpha=-group["lr"])
