"""PAPER.md §1, exact form, as a measurement: scale every scale-invariant weight by c at initialization,
give those weights LR c²η and WD λ/c² and leave everything else alone; the network should then compute
the same function at every step, its invariant weights staying exactly c times the reference run's.

``measure(model, c, momentum, batches)`` trains the reference and the scaled twin side by side and
returns the largest relative deviations; ``control=True`` scales without changing LR and WD (the
twin should then drift away, which shows the measurement can see a difference).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from normmatters.optim import build_param_groups
from normmatters.scale_invariant import scale_invariant_weights


def _run(model: nn.Module, c: float, lr_mult: float, wd_mult: float, lr: float, wd: float, momentum: float, batches):
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in scale_invariant_weights(model).values():
            p.mul_(c)
    groups = build_param_groups(model, lr=lr, weight_decay=wd, wd_scope="all", invariant_lr_mult=lr_mult,
                                invariant_wd_mult=wd_mult)
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    logits, weights = [], []
    for x, y in batches:
        out = model(x)
        logits.append(out.detach().clone())
        opt.zero_grad()
        nn.functional.cross_entropy(out, y).backward()
        opt.step()
        weights.append({n: p.detach().clone() for n, p in scale_invariant_weights(model).items()})
    return logits, weights


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def measure(model: nn.Module, c: float, momentum: float, batches, lr: float = 0.1, wd: float = 5e-3,
            control: bool = False) -> dict:
    """Largest relative deviation over the steps of the twin's logits from the reference's, and of its
    invariant weights from c × the reference's; and how far the reference itself moved."""
    ref_logits, ref_w = _run(model, 1.0, 1.0, 1.0, lr, wd, momentum, batches)
    mult = (1.0, 1.0) if control else (c * c, 1.0 / (c * c))
    logits, w = _run(model, c, *mult, lr, wd, momentum, batches)
    return {"c": c, "momentum": momentum, "control": control, "steps": len(batches),
            "logits_rel": max(_rel(a, b) for a, b in zip(logits, ref_logits)),
            "weights_rel": max(_rel(w_t[n], c * r_t[n]) for w_t, r_t in zip(w, ref_w) for n in r_t),
            "reference_moved": _rel(ref_logits[-1], ref_logits[0])}
