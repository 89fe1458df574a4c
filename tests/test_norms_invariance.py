"""Scale invariance (PAPER.md §1): conv → norm is unchanged when a channel's weights are scaled by c,
and the gradient with respect to those weights is scaled by 1/c.

Run in float64 with ε = 1e-30 (negligible), so the invariance is exact up to rounding. Mean-only BN is not scale
invariant by itself (it does not divide by a scale); it is used with weight normalization, so it is
tested as WN/BWN conv → mean BN, scaling the direction parameter v of one channel.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from normmatters.norms import apply_weight_norm, build_norm

SCALES = (0.1, 10.0)
CHANNEL = 2


def _conv_norm(kind: str, fused: bool | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    options = {"eps": 1e-30, "dtype": torch.float64}  # BN needs eps > 0; negligible here
    if kind != "l2":
        options["fused"] = fused
    if kind == "topk":
        options["k"] = 4
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False).double()
    return nn.Sequential(conv, build_norm(kind, 5, **options))


def _forward_backward(model: nn.Module, param: torch.Tensor, x: torch.Tensor, dy: torch.Tensor):
    y = model(x)
    (grad,) = torch.autograd.grad(y, param, dy)
    return y.detach(), grad


@pytest.mark.parametrize("kind,fused", [("l2", None), ("l1", False), ("l1", True), ("linf", False),
                                        ("linf", True), ("topk", False), ("topk", True)])
def test_scale_invariance_of_conv_then_norm(kind, fused):
    model = _conv_norm(kind, fused)
    x = torch.randn(6, 3, 6, 6, dtype=torch.float64)
    dy = torch.randn(6, 5, 6, 6, dtype=torch.float64)
    weight = model[0].weight
    y0, g0 = _forward_backward(model, weight, x, dy)
    for c in SCALES:
        with torch.no_grad():
            weight[CHANNEL] *= c
        y, g = _forward_backward(model, weight, x, dy)
        with torch.no_grad():
            weight[CHANNEL] /= c
        torch.testing.assert_close(y, y0, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(g[CHANNEL], g0[CHANNEL] / c, rtol=1e-8, atol=1e-12)
        others = [i for i in range(5) if i != CHANNEL]
        torch.testing.assert_close(g[others], g0[others], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("wn_kind,gain", [("wn", False), ("bwn", False), ("bwn", True)])
def test_mean_only_bn_with_weight_norm_is_scale_invariant(wn_kind, gain):
    model = _conv_norm("mean")
    apply_weight_norm(model, wn_kind, gain=gain)
    par = model[0].parametrizations.weight
    v = par.original1 if hasattr(par, "original1") else par.original
    x = torch.randn(6, 3, 6, 6, dtype=torch.float64)
    dy = torch.randn(6, 5, 6, 6, dtype=torch.float64)
    y0, g0 = _forward_backward(model, v, x, dy)
    for c in SCALES:
        with torch.no_grad():
            v[CHANNEL] *= c
        y, g = _forward_backward(model, v, x, dy)
        with torch.no_grad():
            v[CHANNEL] /= c
        torch.testing.assert_close(y, y0, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(g[CHANNEL], g0[CHANNEL] / c, rtol=1e-8, atol=1e-12)


def test_mean_only_bn_alone_is_not_scale_invariant():
    model = _conv_norm("mean")
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    y0 = model(x).detach()
    with torch.no_grad():
        model[0].weight[CHANNEL] *= 10
    assert not torch.allclose(model(x)[:, CHANNEL], y0[:, CHANNEL])
