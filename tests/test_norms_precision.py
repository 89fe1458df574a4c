"""Low-precision statistics (PAPER.md §4): float16 values with float16 or float32 accumulation."""
from __future__ import annotations

import numpy as np
import pytest
import math

import torch

from normmatters.norms import build_norm
from normmatters.norms.precision import narrow_mean_rows, resolve_dtype

LP = ("l1", "linf", "topk")


def _fp16_tree_numpy(row: np.ndarray, mode: str) -> np.float16:
    """The same pairwise tree with numpy float16 scalars (every op a true fp16 op)."""
    vals = [np.float16(v) for v in row]
    size = 1 << (len(vals) - 1).bit_length()
    vals += [np.float16(0)] * (size - len(vals))
    half = np.float16(0.5)
    with np.errstate(over="ignore"):
        while len(vals) > 1:
            h = len(vals) // 2
            if mode == "pairwise_mean":
                vals = [vals[i] * half + vals[i + h] * half for i in range(h)]
            else:
                vals = [vals[i] + vals[i + h] for i in range(h)]
        root = vals[0]
        if mode == "pairwise_mean":
            return root if size == len(row) else np.float16(root * np.float16(size / len(row)))
        return np.float16(root / np.float16(len(row)))


@pytest.mark.parametrize("mode", ["pairwise_mean", "pairwise_sum"])
def test_narrow_accumulator_is_bit_exact_fp16(mode):
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((3, 37)) * 40 + 100).astype(np.float16)
    ours = narrow_mean_rows(torch.from_numpy(rows), torch.float16, mode)
    expected = [_fp16_tree_numpy(r, mode) for r in rows]
    assert ours.dtype == torch.float16
    assert ours.numpy().tolist() == [float(e) for e in expected]


def test_pytorch_fp16_sum_is_wider_than_fp16_but_emulation_is_not():
    x = torch.tensor([[40000.0, -30000.0, 40000.0, -30000.0]], dtype=torch.float16)
    assert x.sum().item() == 20000.0  # PyTorch accumulated in float32: 80000 never overflowed
    assert torch.isinf(narrow_mean_rows(x, torch.float16, "pairwise_sum")).all()  # honest fp16 sum
    assert narrow_mean_rows(x, torch.float16, "pairwise_mean").item() == 5000.0  # averaging tree


def _run(kind, x, stats, accum, eps, mode="pairwise_mean"):
    m = build_norm(kind, x.shape[1], stats_dtype=stats, accum_dtype=accum, accum_mode=mode, eps=eps,
                   momentum=1.0, affine=False)  # momentum 1: running stat = this batch's stat
    y = m(x)
    return y, (m.running_var if kind == "l2" else m.running_scale)


def _reference(kind, x, eps):
    m = build_norm(kind, x.shape[1], eps=max(eps, 1e-30), momentum=1.0, affine=False, dtype=torch.float64)
    y = m(x.double())
    return y, (m.running_var if kind == "l2" else m.running_scale)


@pytest.mark.parametrize("accum", ["float16", "float32"])
def test_fp16_large_activations_overflow_l2_not_lp(accum):
    """|x − μ| ≈ 300: (x − μ)² ≈ 9e4 > 65504 overflows float16 before any accumulation, so the
    float32 accumulator does not save L2 (the paper's diverged fp16 L2 run); |x − μ| does not."""
    torch.manual_seed(0)
    x = (torch.randn(16, 4, 8, 8) * 300 + 600).half()
    y2, var = _run("l2", x, "float16", accum, 1e-5)
    assert torch.isinf(var).all()
    _, ref_var = _reference("l2", x, 1e-5)
    y2_ref, _ = _reference("l2", x, 1e-5)
    assert (y2.double() - y2_ref).abs().max() > 0.5  # the normalized output is garbage (≈ 0)
    for kind in LP:
        y, scale = _run(kind, x, "float16", accum, 1e-5)
        y_ref, scale_ref = _reference(kind, x, 1e-5)
        assert torch.isfinite(y).all() and torch.isfinite(scale).all()
        torch.testing.assert_close(scale.double(), scale_ref, rtol=5e-3, atol=0)
        torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=1e-2)  # fp16 output: ≈ 3 digits


@pytest.mark.parametrize("accum", ["float16", "float32"])
def test_fp16_small_activations_underflow_l2_not_lp(accum):
    """|x − μ| ≈ 1e-4: (x − μ)² ≈ 1e-8 is below float16's smallest subnormal (6e-8), so the variance
    flushes to 0 and, with ε = 0, L2 divides by zero; |x − μ| ≈ 1e-4 is a normal fp16 number."""
    torch.manual_seed(0)
    x = (torch.randn(16, 4, 8, 8) * 1e-4 + 2e-4).half()
    y2, var = _run("l2", x, "float16", accum, 0.0)
    assert (var == 0).all() and not torch.isfinite(y2).all()
    for kind in LP:
        y, scale = _run(kind, x, "float16", accum, 0.0)
        y_ref, scale_ref = _reference(kind, x, 0.0)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(scale.double(), scale_ref, rtol=5e-3, atol=0)
        torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=1e-2)


def test_fp16_sum_accumulator_overflows_where_mean_tree_does_not():
    """The emulation is honest about sums: n·|x − μ| ≈ 1024·240 overflows an fp16 running sum."""
    torch.manual_seed(0)
    x = (torch.randn(16, 4, 8, 8) * 300).half()
    _, scale_sum = _run("l1", x, "float16", "float16", 1e-5, mode="pairwise_sum")
    _, scale_mean = _run("l1", x, "float16", "float16", 1e-5, mode="pairwise_mean")
    assert torch.isinf(scale_sum).all() and torch.isfinite(scale_mean).all()


def test_bfloat16_has_float32_range():
    torch.manual_seed(0)
    x = torch.randn(16, 4, 8, 8) * 300 + 600
    y, var = _run("l2", x, "bfloat16", "bfloat16", 1e-5)
    _, ref_var = _reference("l2", x, 1e-5)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(var.double(), ref_var, rtol=3e-2, atol=0)


def test_default_precision_for_half_input_is_float32_stats():
    x = (torch.randn(8, 3, 4, 4) * 300).half()
    y = build_norm("l1", 3)(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()


def test_resolve_dtype():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    assert resolve_dtype(None) is None
    with pytest.raises(ValueError, match=r"stats_dtype='int8' is not a supported dtype; valid: float32"):
        build_norm("l1", 3, stats_dtype="int8")
    with pytest.raises(ValueError, match=r"accum_mode='kahan' is not valid; valid: pairwise_mean, pairwise_sum"):
        build_norm("l1", 3, accum_mode="kahan")


def test_float8_statistics_round_every_step_to_the_format():
    """L1 BN with float8 (e4m3fn) statistics and float32 accumulation: x, μ, d = x − μ, the mean |d| and
    C·mean|d| each rounded to e4m3 (written out here with PyTorch's own float8 conversion)."""
    from normmatters.norms import build_norm

    torch.manual_seed(0)
    x = torch.randn(16, 2, 3, 3) * 3
    layer = build_norm("l1", 2, stats_dtype="float8_e4m3fn", accum_dtype="float32", affine=False, eps=0.0)
    q = lambda t: t.to(torch.float8_e4m3fn).float()  # noqa: E731
    xs = q(x)
    mu = q(xs.mean((0, 2, 3), keepdim=True))
    d = q(xs - mu)
    stat = q(q(d.abs().mean((0, 2, 3), keepdim=True)) * math.sqrt(math.pi / 2))
    torch.testing.assert_close(layer(x), d / stat)
    assert not torch.allclose(layer(x), build_norm("l1", 2, affine=False, eps=0.0)(x), atol=1e-3)


def test_which_norm_survives_float8_squares():
    """e5m2 overflows to inf past 57344, so L2's d² does for |d| > 240 (the variance is inf and every
    output 0) while L1's |d| does not; e4m3fn saturates at 448, so L2's variance is capped and its
    output far too large."""
    from normmatters.norms import build_norm

    x = torch.randn(32, 1, 4, 4) * 400
    assert torch.tensor(300.0).to(torch.float8_e5m2).float() ** 2 > 57344  # by hand: d² leaves the format
    assert torch.isinf((torch.tensor(300.0) ** 2).to(torch.float8_e5m2).float())
    y2 = build_norm("l2", 1, stats_dtype="float8_e5m2", accum_dtype="float32", affine=False)(x)
    assert (y2 == 0).all()
    y1 = build_norm("l1", 1, stats_dtype="float8_e5m2", accum_dtype="float32", affine=False)(x)
    assert 0.7 < y1.std() < 1.3
    y2 = build_norm("l2", 1, stats_dtype="float8_e4m3fn", accum_dtype="float32", affine=False)(x)
    assert y2.std() > 5  # variance capped near 448 although it is ≈ 1.6e5
    y1 = build_norm("l1", 1, stats_dtype="float8_e4m3fn", accum_dtype="float32", affine=False)(x)
    assert 0.7 < y1.std() < 1.3


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "float8_e5m2", "bfloat16"])
def test_exact_backward_keeps_the_narrow_forward_and_the_float32_gradient(fmt):
    """exact_backward: the outputs of the narrow layer, the input gradient of PyTorch's own float32 batch
    norm. Without it, gradients of 1e-5 die in the rounding (e4m3fn's smallest value is 2^-9)."""
    import torch.nn.functional as F

    from normmatters.norms import build_norm

    torch.manual_seed(0)
    x = torch.randn(16, 3, 4, 4) * 2 + 1
    g = torch.randn(16, 3, 4, 4) * 1e-5
    narrow = build_norm("l2", 3, stats_dtype=fmt, accum_dtype=fmt, affine=False)
    st = build_norm("l2", 3, stats_dtype=fmt, accum_dtype=fmt, affine=False, exact_backward=True)
    xs = [x.clone().requires_grad_() for _ in range(3)]
    y_narrow, y_st = narrow(xs[0]), st(xs[1])
    torch.testing.assert_close(y_st, y_narrow, rtol=0, atol=0)
    y_st.backward(g)
    F.batch_norm(xs[2], None, None, training=True, eps=1e-5).backward(g)  # the float32 reference
    torch.testing.assert_close(xs[1].grad, xs[2].grad, rtol=1e-4, atol=1e-9)
    y_narrow.backward(g)
    if fmt == "float8_e4m3fn":
        assert (xs[0].grad == 0).all()  # every one of these gradients underflows in e4m3fn
    torch.testing.assert_close(st.running_var, narrow.running_var, rtol=0, atol=0)  # statistics: the narrow pass


def test_exact_backward_needs_a_narrow_format():
    from normmatters.norms import build_norm

    with pytest.raises(ValueError, match="exact_backward=True is invalid; valid: false, or true with a narrow"):
        build_norm("l1", 3, exact_backward=True)
    with pytest.raises(ValueError, match="exact_backward=True is invalid"):
        build_norm("topk", 3, stats_dtype="float8_e5m2", ghost_beta=0.5, exact_backward=True)
