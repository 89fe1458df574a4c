"""Weight normalization (WN) and bounded weight normalization (BWN, PAPER.md §5) as parametrizations.

Each output channel c of a conv/linear weight is written as w_c = gain_c · v_c/‖v_c‖₂, with the
direction v as the trained parameter. Registered through ``torch.nn.utils.parametrize``, so the
module still exposes ``.weight`` and state_dict, optimizers and torch.compile work unchanged.

- ``wn`` (Salimans & Kingma): gain = learned g (initialised to ‖w_c‖); same tensors and layout as
  ``torch.nn.utils.parametrizations.weight_norm`` (original0 = g, original1 = v).
- ``bwn`` with ``gain=False``: gain = ρ for every channel, a buffer fixed per layer (default ρ = the
  mean initial channel norm, the authors' variant (a)); ‖W‖ = ρ·√C_out forever.
- ``bwn`` with ``gain=True``: gain = g·‖g₀‖/‖g‖, a learned per-channel gain whose total norm is held
  at its initial value ‖g₀‖ = ‖W_init‖ inside the parametrization (the authors rescaled g after
  every step instead; the function computed is the same and the training loop needs no hook).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils import parametrize


from .constants import WEIGHT_NORM_KINDS, check_kind

DEFAULT_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def channel_norms(w: Tensor, dim: int = 0) -> Tensor:
    """‖w_c‖₂ over all dims but `dim`, keepdim (shape broadcastable against w)."""
    dims = tuple(d for d in range(w.dim()) if d != dim % w.dim())
    return torch.linalg.vector_norm(w, 2, dim=dims, keepdim=True)


class WeightNorm(nn.Module):
    """w = g · v/‖v‖ per channel (g learned)."""

    def __init__(self, dim: int = 0):
        super().__init__()
        self.dim = dim

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        return v * (g / channel_norms(v, self.dim))

    def right_inverse(self, w: Tensor):
        return channel_norms(w, self.dim), w


class BoundedWeightNorm(nn.Module):
    """w = ρ · v/‖v‖ per channel, ρ a fixed buffer."""

    def __init__(self, rho: float, dim: int = 0):
        super().__init__()
        self.dim = dim
        self.register_buffer("rho", torch.tensor(float(rho)))

    def forward(self, v: Tensor) -> Tensor:
        return v * (self.rho.to(v.dtype) / channel_norms(v, self.dim))

    def right_inverse(self, w: Tensor) -> Tensor:
        return w


class BoundedWeightNormGain(nn.Module):
    """w = ĝ · v/‖v‖ per channel with ĝ = g·‖g₀‖/‖g‖, so ‖ĝ‖ = ‖W‖ = ‖g₀‖ always."""

    def __init__(self, total_norm: float, dim: int = 0):
        super().__init__()
        self.dim = dim
        self.register_buffer("total_norm", torch.tensor(float(total_norm)))

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        g_hat = g * (self.total_norm.to(g.dtype) / torch.linalg.vector_norm(g))
        return v * (g_hat / channel_norms(v, self.dim))

    def right_inverse(self, w: Tensor):
        return channel_norms(w, self.dim), w


def _excluded(name: str, exclude) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


def apply_weight_norm(model: nn.Module, kind: str = "none", *, gain: bool = False, rho: float | None = None,
                      exclude=(), dim: int = 0, layer_types=DEFAULT_LAYER_TYPES) -> nn.Module:
    """Parametrize the weight of every conv/linear layer of `model` in place; returns `model`.

    kind: "wn", "bwn" or "none" (no-op). gain: for "bwn", learn a per-channel gain with fixed total
    norm instead of a fixed ρ. rho: for "bwn" without gain, a fixed ρ for every layer instead of each
    layer's mean initial channel norm. exclude: module names to skip, with their children (e.g.
    ("classifier",), as the paper keeps the classifier unnormalized).
    """
    kind = check_kind(kind, WEIGHT_NORM_KINDS, "weight-norm kind")
    if isinstance(exclude, str):
        exclude = (exclude,)
    if rho is not None and not (kind == "bwn" and not gain):
        raise ValueError(f"rho={rho!r} applies only to kind 'bwn' with gain=False")
    if rho is not None and not float(rho) > 0:
        raise ValueError(f"rho={rho!r} is invalid; valid: a number > 0")
    if kind == "none":
        return model
    names = [name for name, _ in model.named_modules()]
    for e in exclude:
        if not any(_excluded(name, (e,)) for name in names):
            warnings.warn(f"apply_weight_norm: exclude entry {e!r} matches no module", stacklevel=2)
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, layer_types) and not _excluded(name, exclude)]
    for name, m in targets:
        if parametrize.is_parametrized(m, "weight"):
            raise ValueError(f"module {name!r} already has a weight parametrization")
        with torch.no_grad():
            norms = channel_norms(m.weight, dim)
        if kind == "wn":
            p = WeightNorm(dim)
        elif gain:
            p = BoundedWeightNormGain(torch.linalg.vector_norm(norms).item(), dim)
        else:
            p = BoundedWeightNorm(norms.mean().item() if rho is None else rho, dim)
        parametrize.register_parametrization(m, "weight", p)
    return model


def remove_weight_norm(model: nn.Module) -> nn.Module:
    """Bake every weight parametrization back into a plain ``weight`` parameter."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model
