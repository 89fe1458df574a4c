"""Where half precision (or an 8-bit float) would break a batch norm (PAPER.md §4), counted on the
values a run really produces: per normalization layer, how many of its centred inputs d = x − μ would
overflow or underflow when squared in a narrow float, how far the one-pass variance E[x²] − E[x]²
(what fast kernels compute) lands from the true one in that float, and how many of the gradients
arriving at the layer would underflow to zero in it.

    probe = PrecisionProbe(model, dtype=torch.float16)   # hooks every batch-norm layer
    ... forward, backward ...
    rows = probe.rows(step=t)      # one dict per layer, counts since the last rows(); then reset
    probe.remove()

The counts are made in float32/float64 from the layer's actual input, so they describe the layer's
numbers whatever precision it computes in; a layer computing in the narrow float would have hit them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .lp_batchnorm import LpBatchNorm
from .precision import rounder

COUNTS = ("values", "square_overflow", "square_underflow", "square_subnormal", "channels", "onepass_bad",
          "onepass_negative", "grads", "grad_underflow")
ONEPASS_RTOL = 0.1  # a one-pass variance more than 10 % off the true one counts as bad


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (LpBatchNorm, nn.modules.batchnorm._BatchNorm))


class PrecisionProbe:
    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float16):
        info = torch.finfo(dtype)
        self.dtype = dtype
        self.sqrt_max = math.sqrt(info.max)             # |d| above: d² overflows to inf
        self.sqrt_tiny = math.sqrt(info.tiny)           # |d| below: d² is subnormal (precision lost)
        self.sqrt_zero = math.sqrt(info.smallest_normal * info.eps / 2)  # below: d² rounds to 0
        self.counts: dict[str, dict[str, int]] = {}
        self.handles = []
        for name, module in model.named_modules():
            if _is_norm(module):
                self.counts[name] = dict.fromkeys(COUNTS, 0)
                self.handles.append(module.register_forward_pre_hook(self._forward(name)))
                self.handles.append(module.register_full_backward_hook(self._backward(name)))

    def _forward(self, name: str):
        def hook(module, args):
            if not module.training:
                return
            x = args[0].detach().float()
            red = (0,) + tuple(range(2, x.dim()))
            d = (x - x.mean(red, keepdim=True)).abs()
            c = self.counts[name]
            c["values"] += d.numel()
            c["square_overflow"] += int((d > self.sqrt_max).sum())
            c["square_underflow"] += int(((d > 0) & (d < self.sqrt_zero)).sum())
            c["square_subnormal"] += int(((d >= self.sqrt_zero) & (d < self.sqrt_tiny)).sum())
            self._onepass(x, red, c)
        return hook

    def _onepass(self, x: Tensor, red: tuple, c: dict) -> None:
        """E[x²] − E[x]² with x, x², the means and the difference rounded to the narrow float (its
        accumulation left wide, the favourable case), against the two-pass variance in float64."""
        true = x.double().var(red, unbiased=False)
        # each step exact in float32, then rounded: what the narrow float's own op gives (float8 has no CPU ops)
        r = rounder(self.dtype, always=True)
        narrow = r(x)
        mean_sq = r(r(narrow * narrow).mean(red))
        mean = r(narrow.mean(red))
        onepass = r(mean_sq - r(mean * mean)).double()
        c["channels"] += true.numel()
        c["onepass_negative"] += int((onepass < 0).sum())
        bad = ~torch.isfinite(onepass) | ((onepass - true).abs() > ONEPASS_RTOL * true)
        c["onepass_bad"] += int(bad.sum())

    def _backward(self, name: str):
        def hook(module, grad_input, grad_output):
            g = grad_output[0]
            if g is None:
                return
            g = g.detach()
            c = self.counts[name]
            c["grads"] += int((g != 0).sum())
            c["grad_underflow"] += int(((g != 0) & (g.to(self.dtype) == 0)).sum())
        return hook

    def rows(self, **tags) -> list[dict]:
        """One row per layer (with ``tags``, e.g. step and epoch) of the counts since the last call."""
        out = [{**tags, "layer": name, "dtype": str(self.dtype).replace("torch.", ""), **counts}
               for name, counts in self.counts.items()]
        for counts in self.counts.values():
            counts.update(dict.fromkeys(COUNTS, 0))
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
