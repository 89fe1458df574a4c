"""The Triton kernels, run by Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, set in a
subprocess before triton is imported), against the float64 references of test_norms_kernels.py.

The interpreter runs every construct these kernels use (2-D tiles, masks, runtime-bounded loops,
reductions); what it cannot check is GPU speed and GPU-only numerics (fused multiply-adds, the
compiled reduction order), which scripts/bench_kernels_gpu.py checks on a GPU. What the interpreter
does not check either is that the kernels compile; the second test compiles every variant for an
sm_90 GPU (PTX and cubin, with Triton's bundled ptxas), which needs no GPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = r'''
import sys, torch
sys.path.insert(0, sys.argv[1])
from test_norms_kernels import EPS, reference
from normmatters.norms.kernels import triton_lp
from normmatters.norms.kinds import KINDS
from normmatters.norms.lp_ops import _canonical

cases = 0
for shape in [(6, 5, 7, 3), (12, 19, 4, 5), (3, 70, 2, 3), (50, 7), (9, 5, 11)]:
    for layout in ("nchw", "channels_last"):
        for dtype in (torch.float32, torch.float64):
            g = torch.Generator().manual_seed(cases)
            x = torch.randn(shape, generator=g, dtype=dtype) * 2 + 0.7
            if layout == "channels_last":
                x = x.movedim(1, -1).contiguous().movedim(-1, 1)
            C, N = shape[1], shape[0]
            xv, restore = _canonical(x)
            w, b = torch.rand(C, generator=g, dtype=dtype) + 0.5, torch.randn(C, generator=g, dtype=dtype)
            dy = torch.empty_like(x).copy_(torch.randn(x.shape, generator=g, dtype=dtype))  # in x's layout
            for kind in ("l1", "linf", "topk", "mean"):
                k = 1 if kind == "linf" else (5 if N == 3 else 4)
                wk = None if kind == "mean" else w
                refs = [t.detach().double().requires_grad_() for t in (x, w, b)]
                y_ref, mu_ref, scale_ref = reference(refs[0], kind, None if wk is None else refs[1], refs[2], k, 1.3)
                grads_ref = torch.autograd.grad(y_ref, refs, dy.double(), allow_unused=True)
                kernel = KINDS[kind].kernel
                y, mu, scale, aux, idx = triton_lp.forward(xv, wk, b, kernel, EPS, 1.3, k, N)
                dyv, _ = _canonical(dy)
                dx, gw, gb = triton_lp.backward(dyv, xv, mu, scale, wk, aux, idx, kernel, EPS, 1.3, k, N)
                tol = dict(rtol=1e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
                what = f"{shape} {layout} {dtype} {kind}"
                torch.testing.assert_close(restore(y).double(), y_ref, **tol, msg=lambda m: f"y {what}: {m}")
                torch.testing.assert_close(mu.double(), mu_ref, **tol, msg=lambda m: f"mean {what}: {m}")
                if scale_ref is not None:
                    torch.testing.assert_close(scale.double(), scale_ref.detach(), **tol,
                                               msg=lambda m: f"scale {what}: {m}")
                    torch.testing.assert_close(gw.double(), grads_ref[1], **tol, msg=lambda m: f"dw {what}: {m}")
                torch.testing.assert_close(restore(dx).double(), grads_ref[0], **tol, msg=lambda m: f"dx {what}: {m}")
                torch.testing.assert_close(gb.double(), grads_ref[2], **tol, msg=lambda m: f"db {what}: {m}")
                cases += 1
print("cases", cases)
'''


def _python(code: str, tmp_path, *args, **env) -> str:
    """Run ``code`` in a fresh interpreter (Triton reads its environment at import); returns stdout."""
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code, *args], env=dict(os.environ, PYTHONPATH=path, **env),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_triton_kernels_under_the_interpreter(tmp_path):
    out = _python(CHECK, tmp_path, str(Path(__file__).parent), TRITON_INTERPRET="1")
    assert "cases 80" in out, out



DROPIN = r"""
import copy, torch
from normmatters.norms import build_norm, kernels
kernels.backend = lambda device_type: "triton"  # the Triton kernels on CPU tensors, run by the interpreter
cases = 0
for layout in ("nchw", "channels_last"):
    for kind in ("l1", "linf", "topk", "mean"):
        torch.manual_seed(cases)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), build_norm(kind, 6, k=3),
                                  torch.nn.ReLU(inplace=True), torch.nn.Conv2d(6, 4, 1)).double()
        ref = copy.deepcopy(net)
        ref[1].fused = False
        x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
        if layout == "channels_last":
            net, ref = net.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y, y_ref = net(x), ref(x)
        y.square().sum().backward()
        y_ref.square().sum().backward()
        torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-11)
        for (name, p), q in zip(net.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10, msg=f"{layout} {kind} {name}")
        cases += 1
print("cases", cases)
"""


def test_triton_kernels_under_an_in_place_activation(tmp_path):
    """The layer's fused path through the Triton kernels (interpreter), followed by ReLU(inplace=True):
    its output is not a view (autograd would refuse the in-place ReLU), in both layouts, and the
    gradients equal the unfused path's."""
    out = _python(DROPIN, tmp_path, TRITON_INTERPRET="1")
    assert "cases 8" in out, out

COMPILE = r'''
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from normmatters.norms.kernels import triton_lp as T

target = GPUTarget("cuda", 90, 32)
done = 0
for dtype, name in ((tl.float32, "fp32"), (tl.float64, "fp64")):
    ptrs = {p: f"*{name}" for p in ("x_ptr", "y_ptr", "mu_ptr", "out_ptr")}
    ints = {p: "i32" for p in ("R", "C", "L", "sN", "sC", "sL", "rows_per_group")}
    consts = {p: "constexpr" for p in ("MODE", "HAS_X", "BR", "BC", "DT")}
    for mode in (T.SUM, T.ABS, T.DY):
        for has_x in (True, False):
            values = {"MODE": mode, "HAS_X": has_x, "BR": 64, "BC": 16, "DT": dtype}
            kernel = triton.compile(ASTSource(T._partials, {**ptrs, **ints, **consts}, values), target=target)
            assert kernel.asm["cubin"]
            done += 1
    ptrs = {p: f"*{name}" for p in ("src_ptr", "x_ptr", "mu_ptr", "a_ptr", "b_ptr", "c_ptr", "out_ptr")}
    sig = {**ptrs, "numel": "i32", "C": "i32", "L": "i32", "CL": "constexpr", "HAS_SIGN": "constexpr",
           "BLOCK": "constexpr"}
    for cl in (True, False):
        for sign in (True, False):
            values = {"CL": cl, "HAS_SIGN": sign, "BLOCK": 1024}
            assert triton.compile(ASTSource(T._channel_affine, sig, values), target=target).asm["cubin"]
            done += 1
print("compiled", done)
'''


def test_triton_kernels_compile_for_a_gpu(tmp_path):
    out = _python(COMPILE, tmp_path, TRITON_CACHE_DIR=str(tmp_path / "cache"))
    assert "compiled 20" in out, out
