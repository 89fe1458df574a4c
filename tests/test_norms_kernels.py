"""Fused batch-norm kernels (C++ on CPU, the PyTorch-ops fallback) against float64 references.

The references below are the equations of lp_batchnorm.py written out on a (C, n) float64 view,
differentiated by autograd; nothing here calls the package to compute an expected value.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from normmatters.norms import build_norm, kernels
from normmatters.norms.lp_ops import lp_batch_norm_train

KINDS = ("l1", "linf", "topk", "mean")
EPS = 1e-5


def c_linf(n: int) -> float:
    return 0.5 * (1.0 + math.sqrt(math.pi * math.log(4.0))) / math.sqrt(2.0 * math.log(n))


def reference(x, kind, weight, bias, k, constant):
    """(y, mean, scale) in float64; scale = constant·stat, without eps."""
    C = x.shape[1]
    moved = x.double().transpose(0, 1)
    rows = moved.reshape(C, -1)
    mu = rows.mean(1, keepdim=True)
    d = rows - mu
    scale = None
    if kind == "mean":
        y = d
    else:
        a = d.abs()
        if kind == "l1":
            stat = a.mean(1, keepdim=True)
        else:
            stat = a.topk(1 if kind == "linf" else k, dim=1).values.mean(1, keepdim=True)
        scale = constant * stat
        y = d / (scale + EPS)
        if weight is not None:
            y = y * weight.view(-1, 1)
    if bias is not None:
        y = y + bias.view(-1, 1)
    return y.reshape(moved.shape).transpose(0, 1), mu.view(-1), None if scale is None else scale.view(-1)


@pytest.fixture(scope="module")
def cpp():
    if kernels.cpu_module() is None:
        pytest.skip("no C++ toolchain: the CPU kernels could not be built")
    return kernels.cpu_module()


@pytest.fixture(params=["cpp", "python"])
def backend(request, monkeypatch):
    if request.param == "cpp":
        request.getfixturevalue("cpp")
    monkeypatch.setattr(kernels, "backend", lambda device_type: request.param)
    return request.param


def _make(shape, layout, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype) * 2 + 0.7
    if layout == "channels_last":
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)  # channels-last for any rank
    return x


def _affine(C, kind, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = None if kind == "mean" else torch.rand(C, generator=g, dtype=dtype) + 0.5
    return w, torch.randn(C, generator=g, dtype=dtype)


def _check(x, kind, k=4, constant=1.3, affine=True, rtol=1e-4, atol=2e-5):
    C = x.shape[1]
    w, b = _affine(C, kind, dtype=x.dtype) if affine else (None, None)
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    refs = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    y, mu, scale = lp_batch_norm_train(*leaves, kind, EPS, constant, k)
    y_ref, mu_ref, scale_ref = reference(refs[0], kind, refs[1], refs[2], k, constant)
    kept = x.is_contiguous() or (x.dim() > 2 and x.movedim(1, -1).is_contiguous())  # else made contiguous
    assert y.shape == x.shape and y.stride() == (x.stride() if kept else x.contiguous().stride())
    torch.testing.assert_close(y.double(), y_ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(mu.double(), mu_ref.detach(), rtol=rtol, atol=atol)
    if scale_ref is not None:
        torch.testing.assert_close(scale.double(), scale_ref.detach(), rtol=rtol, atol=atol)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    inputs = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(y, inputs, dy)
    grads_ref = torch.autograd.grad(y_ref, [t for t in refs if t is not None], dy.double())
    for name, g, gr in zip(("x", "weight", "bias"), grads, grads_ref):
        torch.testing.assert_close(g.double(), gr, rtol=rtol, atol=atol, msg=lambda m: f"d{name}: {m}")


# ----------------------------------------------------------------------------- against float64
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(6, 5, 7, 3), (12, 19, 4, 5), (3, 70, 2, 3)])
def test_kernels_match_float64(backend, kind, layout, shape):
    """Odd channel counts (not multiples of the vector width), short and odd rows, batch < k."""
    _check(_make(shape, layout), kind, k=4 if shape[0] != 3 else 5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(50, 7), (9, 5, 11), (4, 3, 2, 3, 5)])
def test_kernels_other_ranks(backend, kind, shape):
    _check(_make(shape, "nchw"), kind)
    _check(_make(shape, "channels_last"), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_kernels_no_affine_and_float64(backend, kind):
    _check(_make((5, 3, 4, 4), "channels_last", dtype=torch.float64), kind, affine=False, rtol=1e-10, atol=1e-12)
    _check(_make((5, 3, 4, 4), "nchw", dtype=torch.float64), kind, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["l1", "topk"])
def test_kernels_non_contiguous_input(backend, kind):
    base = _make((6, 4, 9, 10), "nchw")
    _check(base[:, :, ::2, 1:], kind)  # sliced: neither layout, made contiguous first
    _check(base.transpose(2, 3), kind)
    _check(_make((7, 40), "nchw").t(), kind)  # a transposed (N, C) matrix


def test_long_channels_accumulate_accurately(backend):
    """Channels of 2^20 values with a large offset: mean, L1 statistic and gradients stay float-accurate.
    Where x is within float32 rounding of the mean, sign(x − μ) is a coin flip; those are left out."""
    x = (_make((16, 2, 256, 256), "nchw") + 100.0).requires_grad_()
    y, mu, scale = lp_batch_norm_train(x, None, None, "l1", EPS, 1.3, 1)
    xd = x.detach().double().requires_grad_()
    y_ref, mu_ref, scale_ref = reference(xd, "l1", None, None, 1, 1.3)
    torch.testing.assert_close(mu.double(), mu_ref.detach(), rtol=4e-7, atol=0)  # a few ulps
    torch.testing.assert_close(scale.double(), scale_ref.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    (dx,), (dx_ref,) = torch.autograd.grad(y, [x], dy), torch.autograd.grad(y_ref, [xd], dy.double())
    clear = (xd.detach() - mu_ref.view(1, -1, 1, 1)).abs() > 1e-4
    assert clear.float().mean() > 0.999
    torch.testing.assert_close(dx.double()[clear], dx_ref[clear], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- semantics
def test_topk_ties_route_to_one_element(cpp):
    """All |x − μ| equal: the top-1 (L∞) gradient goes to exactly one element per channel."""
    x = torch.tensor([1.0, -1.0] * 8).view(4, 1, 2, 2).repeat(1, 3, 1, 1).requires_grad_()
    y, _, scale = lp_batch_norm_train(x, None, None, "linf", EPS, 1.0, 1)
    torch.testing.assert_close(scale, torch.ones(3))
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y) * torch.arange(16.0).view(4, 1, 2, 2))
    # dense part: (dy − mean dy)/(s + ε) is ± the same for tied elements; the sparse part adds to one
    dense = (torch.arange(16.0) - 7.5).view(4, 1, 2, 2) / (1 + EPS)
    off = (dx - dense).transpose(0, 1).reshape(3, -1)
    assert ((off - off.median(1, keepdim=True).values).abs() > 1e-3).sum(1).tolist() == [1, 1, 1]


def test_topk_k_larger_than_n_is_an_error():
    x = torch.randn(2, 3, 2, 2)
    with pytest.raises(ValueError, match=r"^k=9 is invalid for this batch: topk needs 1 <= k <= n=8"):
        lp_batch_norm_train(x, None, None, "topk", EPS, 1.0, 9)
    with pytest.raises(ValueError, match=r"k=9 is invalid"):
        build_norm("topk", 3, k=9)(x)
    with pytest.raises(ValueError, match=r"kind='l2' is invalid for the fused norms"):
        lp_batch_norm_train(x, None, None, "l2", EPS, 1.0, 1)


@pytest.mark.parametrize("kind", ["l1", "topk", "mean"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_results_do_not_depend_on_thread_count(cpp, kind, layout):
    """Large enough (64 samples and channels of 8×8) for the work to be split between threads."""
    x = _make((64, 64, 8, 8), layout).requires_grad_()
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=torch.channels_last
                                                                                    if layout == "channels_last"
                                                                                    else torch.contiguous_format)
    outs = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y, mu, scale = lp_batch_norm_train(x, None, None, kind, EPS, 1.0, 3)
            outs.append((y, mu, scale) + torch.autograd.grad(y, x, dy))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_float64(cpp, kind):
    x = _make((3, 2, 3, 3), "nchw", dtype=torch.float64).requires_grad_()
    w, b = _affine(2, kind, dtype=torch.float64)
    w = None if w is None else w.requires_grad_()
    args = (x, w, b.requires_grad_())
    fn = lambda *a: lp_batch_norm_train(*a, kind, EPS, 1.1, 3)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)
    xl = _make((3, 2, 3, 3), "channels_last", dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(fn, (xl,) + args[1:], eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_module_running_stats_with_kernels(cpp, kind):
    """LpBatchNorm routes training through the kernels; running statistics follow PyTorch's momentum."""
    m = build_norm(kind, 5, momentum=0.25, **({"k": 4} if kind == "topk" else {}))
    x = _make((6, 5, 4, 3), "channels_last")
    m(x)
    n = 6 * 4 * 3
    constant = math.sqrt(math.pi / 2) if kind == "l1" else c_linf(n)
    _, mu, scale = reference(x, kind, None, None, 4, constant)
    torch.testing.assert_close(m.running_mean.double(), 0.25 * mu, rtol=1e-5, atol=1e-6)
    if scale is not None:
        torch.testing.assert_close(m.running_scale.double(), 0.75 + 0.25 * scale, rtol=1e-5, atol=1e-6)


def test_narrow_precision_keeps_the_emulation_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a narrow accumulator must not run the fused kernels")

    monkeypatch.setattr("normmatters.norms.lp_batchnorm.lp_batch_norm_train", refuse)
    build_norm("l1", 3, accum_dtype="bfloat16")(torch.randn(4, 3, 2, 2))
    build_norm("topk", 3, k=2, stats_dtype="float16")(torch.randn(4, 3, 2, 2))
    with pytest.raises(AssertionError, match="must not run"):
        build_norm("l1", 3)(torch.randn(4, 3, 2, 2))


@pytest.mark.parametrize("options", [{"variance": "one_pass"}, {"stats_dtype": "float64", "accum_dtype": "float64"}])
def test_l2_never_runs_the_kernels(options):
    """l2 off nn.BatchNorm's path (one-pass variance, float64 statistics) runs its own equations."""
    x = _make((6, 3, 4, 4), "nchw")
    y = build_norm("l2", 3, affine=False, **options)(x)
    xd = x.double()
    mu, var = xd.mean((0, 2, 3), keepdim=True), xd.var((0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(y.double(), (xd - mu) / torch.sqrt(var + EPS), rtol=1e-4, atol=1e-4)


def test_build_failure_warns_once_and_falls_back(monkeypatch, tmp_path):
    import torch.utils.cpp_extension as ext

    def broken(*args, **kwargs):
        raise OSError("no compiler")

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # no cached binary to import
    monkeypatch.setattr(ext, "load", broken)
    monkeypatch.setattr(kernels, "_cpu_module", None)
    monkeypatch.setattr(kernels, "_cpu_failed", False)
    monkeypatch.delenv("NM_KERNELS", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kernels.backend("cpu") == "python"
        assert kernels.backend("cpu") == "python"
        _check(_make((4, 3, 3, 3), "nchw"), "l1")
    assert [str(w.message) for w in caught if "CPU kernels" in str(w.message)].__len__() == 1
    assert "no compiler" in str(caught[0].message)


def test_nm_kernels_environment_variable(monkeypatch):
    monkeypatch.setenv("NM_KERNELS", "python")
    assert kernels.backend("cpu") == "python" and kernels.backend("cuda") == "python"
    monkeypatch.setenv("NM_KERNELS", "fast")
    with pytest.raises(ValueError, match=r"^NM_KERNELS='fast' is invalid; valid: auto, python, native$"):
        kernels.backend("cpu")


# ----------------------------------------------------------------------------- torch.compile
@pytest.mark.compile
def test_compiled_model_calls_the_kernels_without_graph_breaks(cpp):
    import torch._dynamo
    import torch.nn as nn

    torch._dynamo.reset()

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), build_norm("l1", 6), nn.ReLU(),
                             nn.Conv2d(6, 6, 3, padding=1), build_norm("topk", 6, k=3), build_norm("mean", 6))

    eager, compiled_model = model(), model()
    x = _make((4, 3, 5, 5), "channels_last")
    explanation = torch._dynamo.explain(model())(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    code = "".join(g.code for g in explanation.graphs)
    assert code.count("normmatters.lp_bn_forward.default(") == 3, code
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    ya, yb = eager(x), compiled(x)
    torch.testing.assert_close(yb, ya)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, pa), pb in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(compiled_model[1].running_scale, eager[1].running_scale)
