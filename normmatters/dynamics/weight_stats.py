"""Per-layer and per-channel statistics of the scale-invariant weights.

With a normalization after it, a weight's output channel w_i only matters through its direction
w_i/||w_i||, and SGD moves that direction with the effective step size eta/||w_i||^2 (PAPER.md §1).
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def per_channel_norms(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output channel (dim 0), in float32."""
    return weight.detach().float().flatten(1).norm(dim=1)


def channel_norm_rows(weights: dict[str, torch.Tensor], epoch: int, step: int) -> list[dict]:
    rows = []
    for name, w in weights.items():
        norms = per_channel_norms(w).cpu().tolist()
        rows.extend({"epoch": epoch, "step": step, "param": name, "channel": c, "norm": n}
                    for c, n in enumerate(norms))
    return rows


@torch.no_grad()
def layer_rows(weights: dict[str, torch.Tensor], lrs: dict[str, float], epoch: int, step: int,
               angles: dict[str, float] | None = None) -> list[dict]:
    """One row per weight: Frobenius norm, mean channel norm, eta/mean(||w_i||^2), update angle."""
    rows = []
    for name, w in weights.items():
        ch = per_channel_norms(w)
        sq = float((ch ** 2).mean())
        rows.append({
            "epoch": epoch, "step": step, "param": name, "lr": lrs[name],
            "norm": float(ch.norm()), "channel_norm_mean": float(ch.mean()),
            "eff_step": lrs[name] / sq if sq > 0 else math.inf,
            "angle": (angles or {}).get(name, math.nan),
        })
    return rows


@torch.no_grad()
def angle_between(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle (radians) between two vectors, accurate for tiny angles too.

    arccos of the cosine loses everything below ~3e-4 rad in float32 (cos rounds to 1), and late
    in training a step turns a layer by less than that; 2·atan2(|â − b̂|, |â + b̂|) does not.
    """
    a, b = a.double().flatten(), b.double().flatten()
    ua, ub = a / a.norm().clamp_min(1e-300), b / b.norm().clamp_min(1e-300)
    return float(2 * torch.atan2((ua - ub).norm(), (ua + ub).norm()))


class AngleProbe:
    """Angle (radians) between each weight before and after one optimizer step.

    Call `before()` just before `optimizer.step()` and `after()` just after; only on logged steps,
    since the snapshot copies the weights.
    """

    def __init__(self, weights: dict[str, torch.Tensor]):
        self.weights = weights
        self._prev: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def before(self) -> None:
        self._prev = {n: w.detach().float().flatten().clone() for n, w in self.weights.items()}

    @torch.no_grad()
    def after(self) -> dict[str, float]:
        out = {}
        for name, prev in self._prev.items():
            out[name] = angle_between(prev, self.weights[name].detach().flatten())
        self._prev = {}
        return out
