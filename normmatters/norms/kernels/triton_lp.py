"""Triton kernels of the fused batch norms (CUDA), with the same interface as the C++ module.

x is a canonical view (N, C, L) contiguous or (N·L, C) contiguous; element (n, c, l) is at
n·sN + c·sC + l·sL. The flattened (n, l) index r is cut into G groups; one program reduces one
group for a block of channels and writes partial results (sums, extrema), which PyTorch adds up
(G × C values, negligible). Passes: forward reads x for the mean (and group extrema), L1 reads it
again for Σ|x − μ| and Σsign(x − μ), then one elementwise kernel writes y = x·a + b. Top-k (and
L∞ = top-1) searches only the k groups with the largest extrema of each channel (every element
above the k-th largest group maximum lies in one of them), gathered with PyTorch. Backward: one
reduction pass for Σdy and Σdy·(x − μ), one elementwise pass for dx, an index_add for top-k.
Runs under TRITON_INTERPRET=1 on CPU tensors (how the tests check it without a GPU). ``kernel`` is
a code path of ``kinds.KERNELS``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kinds import KERNEL_L1, KERNEL_MEAN, KERNEL_TOPK

SUM, ABS, DY = 0, 1, 2  # what a partial-reduction program computes
_SUM, _ABS, _DY = tl.constexpr(SUM), tl.constexpr(ABS), tl.constexpr(DY)  # the same, for use inside kernels
_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}  # callers cast half inputs to float32


@triton.jit
def _partials(x_ptr, y_ptr, mu_ptr, out_ptr, R, C, L, sN, sC, sL, rows_per_group,
              MODE: tl.constexpr, HAS_X: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, DT: tl.constexpr):
    """out[g, c, :] for group g: _SUM → (Σx, min x, max x); _ABS → (Σ|x − μ|, Σsign(x − μ), 0);
    _DY (y_ptr = dy) → (Σdy, Σdy·(x − μ), 0)."""
    g = tl.program_id(0)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    cmask = cs < C
    mu = tl.load(mu_ptr + cs, mask=cmask, other=0.0)
    acc0 = tl.zeros((BR, BC), DT)
    acc1 = tl.zeros((BR, BC), DT)
    lo = tl.full((BR, BC), float("inf"), DT)
    hi = tl.full((BR, BC), float("-inf"), DT)
    start = g * rows_per_group
    end = tl.minimum(start + rows_per_group, R)
    for r0 in range(start, end, BR):
        rs = r0 + tl.arange(0, BR)
        mask = (rs < end)[:, None] & cmask[None, :]
        offs = (rs // L * sN + rs % L * sL)[:, None] + (cs * sC)[None, :]
        if MODE == _SUM:
            v = tl.load(x_ptr + offs, mask=mask, other=0.0)
            acc0 += v
            lo = tl.where(mask, tl.minimum(lo, v), lo)
            hi = tl.where(mask, tl.maximum(hi, v), hi)
        elif MODE == _ABS:
            d = tl.where(mask, tl.load(x_ptr + offs, mask=mask, other=0.0) - mu[None, :], 0.0)
            acc0 += tl.abs(d)
            acc1 += tl.where(d > 0, 1.0, 0.0) - tl.where(d < 0, 1.0, 0.0)
        else:
            dy = tl.load(y_ptr + offs, mask=mask, other=0.0)
            acc0 += dy
            if HAS_X:
                d = tl.load(x_ptr + offs, mask=mask, other=0.0) - mu[None, :]
                acc1 += dy * d
    base = out_ptr + (g * C + cs) * 3
    tl.store(base, tl.sum(acc0, 0), mask=cmask)
    if MODE == _SUM:
        tl.store(base + 1, tl.min(lo, 0), mask=cmask)
        tl.store(base + 2, tl.max(hi, 0), mask=cmask)
    else:
        tl.store(base + 1, tl.sum(acc1, 0), mask=cmask)


@triton.jit
def _channel_affine(src_ptr, x_ptr, mu_ptr, a_ptr, b_ptr, c_ptr, out_ptr, numel, C, L,
                    CL: tl.constexpr, HAS_SIGN: tl.constexpr, BLOCK: tl.constexpr):
    """out = a[c]·src + c[c] (+ b[c]·sign(x − μ[c]) with HAS_SIGN), elementwise over a dense tensor."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    if CL:
        ch = i % C
    else:
        ch = (i // L) % C
    v = tl.load(src_ptr + i, mask=mask, other=0.0)
    out = tl.load(a_ptr + ch, mask=mask, other=0.0) * v + tl.load(c_ptr + ch, mask=mask, other=0.0)
    if HAS_SIGN:
        d = tl.load(x_ptr + i, mask=mask, other=0.0) - tl.load(mu_ptr + ch, mask=mask, other=0.0)
        out += tl.load(b_ptr + ch, mask=mask, other=0.0) * (tl.where(d > 0, 1.0, 0.0) - tl.where(d < 0, 1.0, 0.0))
    tl.store(out_ptr + i, out, mask=mask)


def _geometry(xv: torch.Tensor, batch: int):
    """(N, C, L, sN, sC, sL, channels_last) of a canonical view."""
    if xv.dim() == 3:
        N, C, L = xv.shape
        return N, C, L, C * L, L, 1, False
    M, C = xv.shape
    L = M // batch
    return batch, C, L, L * C, 1, C, True


def _launch_partials(mode, x, dy, mu, geo, min_groups=1):
    N, C, L, sN, sC, sL, cl = geo
    R = N * L
    BC = min(triton.next_power_of_2(C), 64) if cl else min(triton.next_power_of_2(C), 4)
    BR = max(16, 1024 // BC)
    cblocks = triton.cdiv(C, BC)
    groups = min(R, max(min_groups, min(triton.cdiv(R, BR), max(1, 2048 // cblocks))))
    rows = triton.cdiv(R, groups)
    groups = triton.cdiv(R, rows)
    src = x if x is not None else dy
    out = torch.empty(groups, C, 3, device=src.device, dtype=src.dtype)
    mu = src.new_zeros(C) if mu is None else mu.to(src.dtype).contiguous()
    _partials[(groups, cblocks)](src, dy if dy is not None else src, mu, out, R, C, L, sN, sC, sL, rows,
                                 MODE=mode, HAS_X=x is not None, BR=BR, BC=BC, DT=_DTYPES[src.dtype])
    return out, rows


def _affine(src, x, mu, a, b, c0, geo, out=None):
    N, C, L, _, _, _, cl = geo
    out = torch.empty_like(src) if out is None else out
    BLOCK = 1024
    same = lambda t: (a if t is None else t).to(src.dtype).contiguous()  # noqa: E731
    _channel_affine[(triton.cdiv(src.numel(), BLOCK),)](
        src, x if x is not None else src, same(mu), same(a), same(b), same(c0), out,
        src.numel(), C, L, CL=cl, HAS_SIGN=b is not None, BLOCK=BLOCK)
    return out


def _topk(xv, mu, k, part, rows, geo):
    """The k largest |x − μ| per channel (values, flat indices, signs), searching k groups each."""
    N, C, L, sN, sC, sL, _ = geo
    R = N * L
    dev = torch.maximum(part[:, :, 2] - mu, mu - part[:, :, 1])  # (G, C) largest |x − μ| per group
    cand = dev.topk(k, dim=0).indices.t()  # (C, k)
    r = cand.unsqueeze(-1) * rows + torch.arange(rows, device=xv.device)  # (C, k, rows)
    valid = r < R
    r = r.clamp(max=R - 1)
    c = torch.arange(C, device=xv.device).view(C, 1, 1)
    flat = (r // L * sN + r % L * sL + c * sC).reshape(C, -1)
    d = xv.reshape(-1)[flat] - mu.view(C, 1)
    a = torch.where(valid.reshape(C, -1), d.abs(), torch.full_like(d, -1.0))
    vals, pos = a.topk(k, dim=1)
    return vals, flat.gather(1, pos), torch.sign(d.gather(1, pos))


def forward(xv, weight, bias, kernel: int, eps: float, constant: float, k: int, batch: int, out=None):
    """(y, mean, scale, aux, idx) as the C++ kernel; y is ``out`` when given (xv's shape, contiguous)."""
    geo = _geometry(xv, batch)
    N, C, L = geo[:3]
    n = N * L
    topk = kernel == KERNEL_TOPK
    part, rows = _launch_partials(SUM, xv, None, None, geo, min_groups=k if topk else 1)
    mu = (part[:, :, 0].double().sum(0) / n).to(xv.dtype)
    aux, idx = xv.new_empty(0), torch.empty(0, 0, dtype=torch.long, device=xv.device)
    scale = xv.new_zeros(C)
    if kernel == KERNEL_MEAN:
        a = xv.new_ones(C)
        shift = -mu if bias is None else bias - mu
    else:
        if kernel == KERNEL_L1:
            p2, _ = _launch_partials(ABS, xv, None, mu, geo)
            stat = p2[:, :, 0].double().sum(0) / n
            aux = (p2[:, :, 1].double().sum(0) / n).to(xv.dtype)
        else:
            vals, idx, sgn = _topk(xv, mu, k, part, rows, geo)
            stat, aux = vals.double().mean(1), sgn.to(xv.dtype)
        scale = (constant * stat).to(xv.dtype)
        inv = 1.0 / (scale + eps)
        a = inv if weight is None else inv * weight
        shift = -mu * a if bias is None else bias - mu * a
    y = _affine(xv, None, None, a, None, shift, geo, out=out)
    return y, mu.to(xv.dtype), scale.to(xv.dtype), aux, idx


def backward(dy, xv, mu, scale, weight, aux, idx, kernel: int, eps: float, constant: float, k: int, batch: int):
    geo = _geometry(dy, batch)
    N, C, L = geo[:3]
    n = N * L
    part, _ = _launch_partials(DY, xv if kernel != KERNEL_MEAN else None, dy, mu, geo)
    sdy, sdyd = part[:, :, 0].double().sum(0), part[:, :, 1].double().sum(0)
    if kernel == KERNEL_MEAN:
        return _affine(dy, None, None, dy.new_ones(C), None, -sdy / n, geo), None, sdy.to(dy.dtype)
    inv = 1.0 / (scale.double() + eps)
    a = inv if weight is None else inv * weight.double()
    t = -a * sdyd * inv  # −S/(s + ε), S = Σ γ·dy·x̂
    base = -a * sdy / n
    if kernel == KERNEL_L1:
        b = t * constant / n
        dx = _affine(dy, xv, mu, a, b, base - b * aux.double(), geo)
    else:
        coef = (t * constant / k).view(C, 1) * aux.double()  # (C, k) sparse part at the top-k
        dx = _affine(dy, None, None, a, None, base - coef.sum(1) / n, geo)
        dx.view(-1).index_add_(0, idx.reshape(-1), coef.reshape(-1).to(dx.dtype))
    gw = (sdyd * inv).to(dy.dtype) if weight is not None else None
    return dx, gw, sdy.to(dy.dtype)
