"""Lp batch norm: equality with nn.BatchNorm, float64 reference formulas, running statistics."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from normmatters.norms import C_L1, LpBatchNorm, build_norm, c_linf

LP_KINDS = ("l1", "linf", "topk", "mean")


def c_linf_formula(n: int) -> float:
    """PAPER.md §3, written out here: C_L∞(n) = ½(1 + √(π·ln 4)) / √(2·ln n)."""
    return 0.5 * (1.0 + math.sqrt(math.pi * math.log(4.0))) / math.sqrt(2.0 * math.log(n))


@pytest.mark.parametrize("n,expected", [(2, 1.3108878255967675), (10, 0.7192343426424046),
                                        (1000, 0.41525014133501587), (8192, 0.36357486704389547)])
def test_c_linf_against_the_formula(n, expected):
    assert c_linf_formula(n) == pytest.approx(expected, rel=1e-14)
    assert c_linf(n) == pytest.approx(expected, rel=1e-12)


def reference(x: torch.Tensor, kind: str, weight, bias, eps: float, k: int = 10, constant=None):
    """PAPER.md §3 written out in float64 on a (C, n) view; returns (y, mean, scale-or-var)."""
    xd = x.double()
    rows = xd.transpose(0, 1).reshape(x.shape[1], -1)
    n = rows.shape[1]
    mu = rows.mean(1, keepdim=True)
    d = rows - mu
    if kind == "mean":
        y, stat = d, None
    elif kind == "l2":
        stat = (d * d).mean(1, keepdim=True)
        y = d / torch.sqrt(stat + eps)
    else:
        if kind == "l1":
            stat = (constant or C_L1) * d.abs().mean(1, keepdim=True)
        elif kind == "linf":
            stat = (constant or c_linf_formula(n)) * d.abs().max(1, keepdim=True).values
        else:
            stat = (constant or c_linf_formula(n)) * d.abs().topk(k, dim=1).values.mean(1, keepdim=True)
        y = d / (stat + eps)
    if weight is not None and kind != "mean":
        y = y * weight.double().view(-1, 1)
    if bias is not None:
        y = y + bias.double().view(-1, 1)
    moved = list(x.transpose(0, 1).shape)
    y = y.reshape(moved).transpose(0, 1)
    return y, mu.view(-1), None if stat is None else stat.view(-1)


def _layout(x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _randomize_affine(m, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if getattr(m, "weight", None) is not None:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        if getattr(m, "bias", None) is not None:
            m.bias.copy_(torch.randn(m.bias.shape, generator=g))


# ----------------------------------------------------------------------------- l2 == nn.BatchNorm
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("impl", ["native", "own"])
def test_l2_matches_batchnorm2d(layout, impl):
    torch.manual_seed(0)
    # accum_dtype float64 routes l2 through this package's own equations instead of F.batch_norm
    options = {"accum_dtype": "float64"} if impl == "own" else {}
    ours, ref = build_norm("l2", 6, momentum=0.3, **options), nn.BatchNorm2d(6, momentum=0.3)
    _randomize_affine(ours)
    ref.load_state_dict(ours.state_dict())
    tol = {"rtol": 1e-5, "atol": 1e-5}
    for step in range(3):
        x = _layout(torch.randn(8, 6, 5, 5) * 3 + step, layout)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        dy = torch.randn_like(ya)
        ya.backward(dy)
        yb.backward(dy)
        torch.testing.assert_close(ya, yb, **tol)
        assert ya.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
        torch.testing.assert_close(xa.grad, xb.grad, **tol)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **tol)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **tol)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), **tol)
    ours.eval(), ref.eval()
    x = _layout(torch.randn(4, 6, 5, 5), layout)
    torch.testing.assert_close(ours(x), ref(x), **tol)


@pytest.mark.parametrize("shape", [(16, 5), (8, 5, 7)])
def test_l2_matches_batchnorm1d(shape):
    torch.manual_seed(1)
    ours, ref = build_norm("l2", 5), nn.BatchNorm1d(5)
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_l2_state_dict_is_batchnorm_compatible():
    bn = nn.BatchNorm2d(4)
    bn(torch.randn(8, 4, 3, 3))
    ours = build_norm("l2", 4)
    ours.load_state_dict(bn.state_dict())  # strict: same keys and shapes
    assert set(ours.state_dict()) == set(bn.state_dict())
    nn.BatchNorm2d(4).load_state_dict(ours.state_dict())


# ----------------------------------------------------------------------------- Lp statistics
def _expected_topk_abs_normal(n: int, k: int) -> float:
    """E[mean of the k largest of n |z|], z ~ N(0, 1), from the order-statistic densities."""
    t = torch.linspace(1e-6, 9.0, 60001, dtype=torch.float64)
    cdf = torch.erf(t / math.sqrt(2.0)).clamp(1e-300, 1 - 1e-16)  # half-normal
    log_pdf = math.log(math.sqrt(2.0 / math.pi)) - t * t / 2
    total = 0.0
    for j in range(1, k + 1):  # j-th largest = order statistic r = n - j + 1
        r = n - j + 1
        log_c = math.lgamma(n + 1) - math.lgamma(r) - math.lgamma(n - r + 1)
        dens = torch.exp(log_c + (r - 1) * torch.log(cdf) + (n - r) * torch.log1p(-cdf) + log_pdf)
        total += torch.trapezoid(t * dens, t).item()
    return total / k


@pytest.mark.parametrize("kind", ["l1", "linf", "topk"])
def test_gaussian_output_std(kind):
    """Per-channel std of the normalized output for N(μ, σ²) input with n = 8192 per channel.

    l1: C_L1·mean|x − μ| estimates σ with relative s.d. ≈ √((π/2 − 1)/n) ≈ 0.8% and the sample
    s.d. has ≈ 0.8% too, so each channel's std is 1 within 5% (> 5 s.d.).
    linf/topk: the paper's C_L∞(n) is not an unbiased σ estimate (for n = 8192 the output std is
    ≈ 0.69 for L∞ and ≈ 0.79 for top-10); we check the std against the exact prediction
    1/(C_L∞(n)·E[max or top-k mean of |z|]). One channel's max fluctuates by ≈ 7% (Gumbel), the
    mean of 32 channels by ≈ 1.3%, so 5% is again a ≥ 4 s.d. bound (top-k fluctuates less).
    """
    torch.manual_seed(0)
    C, n = 32, 8192
    x = torch.randn(32, C, 16, 16) * torch.rand(C).view(1, C, 1, 1).mul(5).add(0.1) + 3.0
    y = build_norm(kind, C, affine=False)(x).detach()
    std = y.transpose(0, 1).reshape(C, -1).std(1)
    if kind == "l1":
        assert torch.all((std - 1).abs() < 0.05), std
    else:
        expected = 1.0 / (c_linf_formula(n) * _expected_topk_abs_normal(n, 1 if kind == "linf" else 10))
        assert abs(std.mean().item() / expected - 1) < 0.05, (std.mean().item(), expected)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind", LP_KINDS)
@pytest.mark.parametrize("shape,layout", [((6, 4, 5, 5), "nchw"), ((6, 4, 5, 5), "channels_last"),
                                          ((40, 4), "nchw"), ((5, 4, 9), "nchw")])
def test_matches_float64_reference(kind, fused, shape, layout):
    torch.manual_seed(0)
    k = 3
    m = build_norm(kind, 4, k=k, fused=fused, momentum=0.25) if kind == "topk" else \
        build_norm(kind, 4, fused=fused, momentum=0.25)
    _randomize_affine(m)
    x = _layout(torch.randn(shape) * 2 + 0.5, layout).requires_grad_()
    xr = x.detach().double().requires_grad_()
    w = None if m.weight is None else m.weight.detach().double().requires_grad_()
    b = m.bias.detach().double().requires_grad_()
    y = m(x)
    y_ref, mu_ref, stat_ref = reference(xr, kind, w, b, m.eps, k=k)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_ref.backward(dy.double())
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.bias.grad.double(), b.grad, rtol=1e-5, atol=1e-5)
    if w is not None:
        torch.testing.assert_close(m.weight.grad.double(), w.grad, rtol=1e-4, atol=1e-5)
    # PyTorch momentum convention, stored scale without eps
    torch.testing.assert_close(m.running_mean.double(), 0.25 * mu_ref.detach(), rtol=1e-5, atol=1e-6)
    if stat_ref is not None:
        torch.testing.assert_close(m.running_scale.double(), 0.75 + 0.25 * stat_ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["l1", "topk", "linf"])
def test_float64_input_is_exact(kind):
    torch.manual_seed(0)
    x = torch.randn(7, 3, 4, 4, dtype=torch.float64)
    m = build_norm(kind, 3, dtype=torch.float64, k=5) if kind == "topk" else build_norm(kind, 3, dtype=torch.float64)
    torch.testing.assert_close(m(x), reference(x, kind, None, None, m.eps, k=5)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["l1", "linf", "topk", "mean"])
def test_eval_uses_running_stats(kind):
    torch.manual_seed(0)
    m = build_norm(kind, 3)
    _randomize_affine(m)
    for _ in range(4):
        m(torch.randn(16, 3, 4, 4) * 2 + 1)
    m.eval()
    x = torch.randn(5, 3, 4, 4)
    shape = (1, 3, 1, 1)
    rm = m.running_mean.view(shape)
    if kind == "mean":
        expected = x - rm + m.bias.view(shape)
    else:
        expected = (x - rm) / (m.running_scale.view(shape) + m.eps) * m.weight.view(shape) + m.bias.view(shape)
    torch.testing.assert_close(m(x), expected)
    assert int(m.num_batches_tracked) == 4


@pytest.mark.parametrize("kind", ["l2", "l1", "topk"])
def test_momentum_none_is_cumulative_average(kind):
    torch.manual_seed(0)
    m = build_norm(kind, 2, momentum=None, k=4) if kind == "topk" else build_norm(kind, 2, momentum=None)
    means = []
    for i in range(3):
        x = torch.randn(10, 2, 3) + i
        means.append(x.transpose(0, 1).reshape(2, -1).mean(1))
        m(x)
    torch.testing.assert_close(m.running_mean, torch.stack(means).mean(0))


@pytest.mark.parametrize("kind", ["l2", "l1", "mean"])
def test_no_affine_no_running_stats(kind):
    m = build_norm(kind, 3, affine=False, track_running_stats=False)
    assert list(m.parameters()) == [] and m.running_mean is None
    x = torch.randn(6, 3, 2, 2) * 4 + 2
    m.eval()  # without running stats, eval still normalises with the batch statistics
    y = m(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    assert isinstance(build_norm("none", 3), nn.Identity)


def test_mean_only_has_bias_only_and_topk_repr():
    m = build_norm("mean", 4)
    assert m.weight is None and m.bias.shape == (4,)
    assert set(m.state_dict()) == {"bias", "running_mean", "num_batches_tracked"}
    r = repr(build_norm("topk", 4, k=7, stats_dtype="bfloat16"))
    assert "k=7" in r and "stats_dtype=bfloat16" in r and isinstance(build_norm("l1", 4), LpBatchNorm)


@pytest.mark.parametrize("kind,k", [("l1", 1), ("linf", 1), ("topk", 3), ("topk", 10)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_equals_plain_edge_cases(kind, k, layout):
    """No affine, batch smaller than k (the two-stage top-k), and a constant channel (all ties)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 3, 5)
    x[:, 1] = 0.25  # constant channel: x − μ = 0 everywhere, the scale is 0 and only ε divides
    x = _layout(x, layout)
    grads, outs = [], []
    for fused in (False, True):
        m = build_norm(kind, 3, affine=False, fused=fused, **({"k": k} if kind == "topk" else {}))
        xx = x.clone().requires_grad_()
        y = m(xx)
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        outs.append(y.detach())
        grads.append(xx.grad)
        assert torch.isfinite(xx.grad).all()
    torch.testing.assert_close(outs[1], outs[0])
    # the constant channel's gradient differs in which tied element gets the sparse term; compare others
    keep = [0, 2]
    torch.testing.assert_close(grads[1][:, keep], grads[0][:, keep], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_accepts_broadcast_output_gradient(layout):
    """A gradient expanded with stride 0 (from multiplying by a broadcast tensor) works."""
    torch.manual_seed(0)
    x = _layout(torch.randn(6, 3, 4, 4), layout)
    w = torch.randn(1, 3, 1, 4)
    grads = []
    for fused in (False, True):
        m = build_norm("l1", 3, fused=fused)
        _randomize_affine(m)
        xx = x.clone().requires_grad_()
        (m(xx) * w).sum().backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("constant", ["twice", "once"])
def test_ghost_topk_follows_the_authors_recurrence(constant):
    """The authors' "Top10" (GhostTopkBatchNorm2d): m_t = C(n)·(β·m_{t−1} + (1−β)·T_t), T_t the mean of
    the k largest |x − μ| per channel, m_0 = 0; output (x − μ)/(m_t + ε). With the constant applied
    once: m_t = β·m_{t−1} + (1−β)·C(n)·T_t. Checked in float64 by hand."""
    from normmatters.norms import build_norm

    torch.manual_seed(0)
    k, beta, eps = 3, 0.75, 1e-5
    layer = build_norm("topk", 2, k=k, ghost_beta=beta, ghost_constant=constant, eps=eps, dtype=torch.float64)
    xs = [torch.randn(4, 2, 3, 3, dtype=torch.float64) * (1 + i) for i in range(3)]
    n = 4 * 3 * 3
    c = 0.5 * (1 + math.sqrt(math.pi * math.log(4))) / math.sqrt(2 * math.log(n))
    m = [0.0, 0.0]
    for x in xs:
        y = layer(x)
        for ch in range(2):
            d = x[:, ch] - x[:, ch].mean()
            t = sum(sorted(d.abs().flatten().tolist(), reverse=True)[:k]) / k
            m[ch] = c * (beta * m[ch] + (1 - beta) * t) if constant == "twice" else beta * m[ch] + (1 - beta) * c * t
            torch.testing.assert_close(y[:, ch], d / (m[ch] + eps))
    # and not the plain top-k layer: its denominator is C·T
    plain = build_norm("topk", 2, k=k, eps=eps, dtype=torch.float64)
    assert not torch.allclose(plain(xs[-1]), layer.train()(xs[-1]))


def test_ghost_topk_steady_state_is_a_third_of_c_t_unless_the_constant_is_applied_once():
    """Fed one batch again and again, m settles at C(1−β)/(1−Cβ)·T (authors') or at C·T (once)."""
    from normmatters.norms import build_norm

    torch.manual_seed(1)
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    d = (x - x.mean()).abs().flatten()
    t = d.topk(10).values.mean().item()
    c = 0.5 * (1 + math.sqrt(math.pi * math.log(4))) / math.sqrt(2 * math.log(x.numel()))
    for constant, expected in (("twice", c * 0.25 / (1 - c * 0.75) * t), ("once", c * t)):
        layer = build_norm("topk", 1, ghost_beta=0.75, ghost_constant=constant, eps=0.0, dtype=torch.float64)
        for _ in range(200):
            y = layer(x)
        assert math.isclose(((x - x.mean()) / y).flatten()[d.argmax()].item(), expected, rel_tol=1e-9)
    for n in (128 * 32 * 32, 128 * 16 * 16, 128 * 8 * 8):  # ResNet-20's layers, batch 128: about a third of C·T
        c = 0.5 * (1 + math.sqrt(math.pi * math.log(4))) / math.sqrt(2 * math.log(n))
        assert 0.3 < 0.25 / (1 - c * 0.75) < 0.35


@pytest.mark.parametrize("constant", ["twice", "once"])
def test_ghost_topk_without_its_average_is_plain_topk(constant):
    """β = 0 leaves m_t = C·T_t either way: the ghost layer's only difference from Top-10 is its average
    (so the constant-once arm differs from Top-10 by the moving average alone)."""
    from normmatters.norms import build_norm

    torch.manual_seed(2)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    outs, grads = [], []
    for layer in (build_norm("topk", 3, dtype=torch.float64),
                  build_norm("topk", 3, ghost_beta=0.0, ghost_constant=constant, dtype=torch.float64)):
        xx = x.clone().requires_grad_()
        y = layer.train()(xx)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append(xx.grad)
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(grads[1], grads[0])


def test_ghost_beta_is_refused_outside_topk():
    from normmatters.norms import build_norm

    with pytest.raises(ValueError, match="ghost_beta=0.5 is invalid"):
        build_norm("l1", 2, ghost_beta=0.5)
    with pytest.raises(ValueError, match="ghost_beta=1 is invalid"):
        build_norm("topk", 2, ghost_beta=1)
    with pytest.raises(ValueError, match="ghost_constant='once' is invalid; valid: twice, once"):
        build_norm("topk", 2, ghost_constant="once")  # without ghost_beta there is no average
    with pytest.raises(ValueError, match="ghost_constant='thrice' is invalid"):
        build_norm("topk", 2, ghost_beta=0.5, ghost_constant="thrice")
