"""The fused kernels in PyTorch ops: the fallback of the C++ and Triton ones, with their interface.

Differentiating the plain composite (x − μ, |·|, mean, ÷, affine) through autograd keeps several
full-size intermediates alive until backward and allocates a new full-size tensor per op. Here
forward allocates one full-size tensor (the output, used as scratch first) and saves just the
input plus per-channel statistics; backward allocates one (the input gradient) and writes every
step in place. The gradients are the analytic ones of PAPER.md §3; with x̂ = (x − μ)/(s + ε),
g = γ·dy, S = Σ g·x̂ and s = C·stat:

    dx = (g − mean(g))/(s + ε) − S/(s + ε) · ds/dx,
    L1:    ds/dx_i = (C/n)·(sign(x_i − μ) − mean(sign(x − μ)))
    top-k: ds/dx_i = (C/k)·(sign(x_i − μ)·[i ∈ top-k] − Σ_{j ∈ top-k} sign(x_j − μ)/n)

L∞ is top-k with k = 1. At exact ties of the largest |x − μ| this path routes the gradient to
one of the tied elements (like torch.topk), where autograd through ``amax`` would split it; for
real-valued data ties have probability zero. Backward is not itself differentiable (use
``fused=False`` for double backward). ``kernel`` is a code path of ``kinds.KERNELS``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..kinds import KERNEL_L1, KERNEL_MEAN


def _bshape(xv: Tensor):
    return (1, -1) if xv.dim() == 2 else (1, -1, 1)


def _fold(rows: int, cols: int) -> int:
    """Rows to fold into the inner dim so that a column reduction has ≥ 64 contiguous floats:
    PyTorch's CPU kernels vectorize (M, C) reductions over dim 0 poorly for small C."""
    r = 1
    while r * cols < 64 and rows % (2 * r) == 0:
        r *= 2
    return r


def channel_sum(t: Tensor) -> Tensor:
    """Per-channel sum of a canonical (N, C, L) or (M, C) tensor, keepdim."""
    if t.dim() == 3:  # the inner dim first: much faster than sum((0, 2)) for short L
        return t.sum(2, keepdim=True).sum(0, keepdim=True)
    M, C = t.shape
    r = _fold(M, C)
    return t.view(M // r, r * C).sum(0).view(r, C).sum(0, keepdim=True)


def _row_extrema(xg: Tensor, channels_first: bool):
    """Per (sample, channel) min and max of a grouped (G, C, L) or (G, L, C) tensor."""
    if channels_first:
        return xg.amin(2), xg.amax(2)  # two fast passes; aminmax is not vectorized
    G, L, C = xg.shape
    r = _fold(L, C)
    xf = xg.view(G, L // r, r * C)
    return xf.amin(1).view(G, r, C).amin(1), xf.amax(1).view(G, r, C).amax(1)


def _topk_two_stage(a: Tensor, k: int):
    """Top-k of each channel of a non-negative canonical tensor `a` (fallback for batches with
    fewer than k samples); returns values and flat indices, (C, k) each."""
    if a.dim() == 2:  # (M, C)
        vals, idx = a.topk(k, dim=0)  # (k, C)
        flat = idx * a.shape[1] + torch.arange(a.shape[1], device=a.device)
        return vals.t(), flat.t()
    N, C, L = a.shape
    k1 = min(k, L)
    v1, i1 = a.topk(k1, dim=2)  # (N, C, k1): every channel's top-k lies among these
    v2, i2 = v1.permute(1, 0, 2).reshape(C, N * k1).topk(k, dim=1)  # (C, k)
    n_idx = torch.div(i2, k1, rounding_mode="floor")
    c_idx = torch.arange(C, device=a.device).unsqueeze(1)
    l_idx = i1.permute(1, 0, 2).reshape(C, N * k1).gather(1, i2)
    return v2, (n_idx * C + c_idx) * L + l_idx


def topk_abs_deviation(xv: Tensor, mu: Tensor, k: int, batch: int):
    """The k largest |x − μ| of each channel: values, flat indices into xv and sign(x − μ), (C, k).

    A "row" is one sample's part of a channel. One min/max pass gives every row's largest |x − μ|;
    the channel's top-k elements all lie in the k rows with the largest row maxima (any element
    ≥ the k-th largest row maximum sits in such a row), so only those k rows are searched, a
    fraction k/batch of the data, without a full-size |x − μ| temporary.
    """
    C = xv.shape[1]
    mu_c = mu.view(-1)
    channels_first = xv.dim() == 3
    xg = xv if channels_first else xv.view(batch, -1, C)  # (G, C, L) or (G, L, C)
    G, L = xg.shape[0], xg.shape[2] if channels_first else xg.shape[1]
    if G < k:
        a = torch.sub(xv, mu).abs_()
        vals, flat = _topk_two_stage(a, k)
        return vals, flat, torch.sign(xv.reshape(-1)[flat] - mu_c.view(C, 1))
    lo, hi = _row_extrema(xg, channels_first)  # (G, C)
    row_max = torch.maximum(hi - mu_c, mu_c - lo)
    rows = row_max.topk(k, dim=0).indices.t()  # (C, k) sample index of the candidate rows
    c_idx = torch.arange(C, device=xv.device).unsqueeze(1)
    cand = xg[rows, c_idx, :] if channels_first else xg[rows, :, c_idx]  # (C, k, L)
    dev = cand.reshape(C, -1) - mu_c.view(C, 1)
    vals, pos = dev.abs().topk(k, dim=1)
    sgn = torch.sign(dev.gather(1, pos))
    n_idx = rows.gather(1, torch.div(pos, L, rounding_mode="floor"))
    l_idx = pos % L
    flat = (n_idx * C + c_idx) * L + l_idx if channels_first else (n_idx * L + l_idx) * C + c_idx
    return vals, flat, sgn


def channel_affine(src: Tensor, scale: Tensor, shift: Tensor, out: Tensor | None = None) -> Tensor:
    """out = src·scale + shift with per-channel scale/shift (out may be src).

    On CPU, addcmul with two broadcast operands is not vectorized for (N, C, L); the eval-mode
    batch-norm kernel with mean 0, variance 1 and ε = 0 computes exactly src·w + b and is.
    """
    if src.dim() == 3 and src.device.type == "cpu":
        out = torch.empty_like(src) if out is None else out
        ones = torch.ones(src.shape[1], dtype=src.dtype)
        empty = src.new_empty(0)
        torch.ops.aten.native_batch_norm.out(src, scale.view(-1), shift.view(-1), torch.zeros_like(ones), ones,
                                             False, 0.0, 0.0, out=out, save_mean=empty, save_invstd=empty.clone())
        return out
    return torch.addcmul(shift, src, scale, out=out)


def dy_sums(dy: Tensor, xv: Tensor, mu: Tensor, scratch: Tensor):
    """Per-channel Σ dy and Σ dy·(x − μ) of a canonical view, keepdim.

    These are batch norm's bias and weight gradients at invstd = 1. For an (M, C) view
    (channels-last) PyTorch's batch-norm backward kernel computes both in one pass, 2–3× faster
    than two reductions and a product; for (N, C, L) the plain reductions are ~10 % faster
    (they use `scratch`, a full-size buffer that the caller overwrites afterwards).
    """
    if xv.dim() == 3:
        return channel_sum(dy), channel_sum(torch.sub(xv, mu, out=scratch).mul_(dy))
    if dy.stride() != xv.stride():  # e.g. an expanded (broadcast) output gradient
        dy = dy.contiguous()
    ones = xv.new_ones(xv.shape[1])
    _, sdyd, sdy = torch.ops.aten.native_batch_norm_backward(
        dy, xv, ones, None, None, mu.reshape(-1), ones, True, 0.0, [False, True, True])
    bshape = _bshape(xv)
    return sdy.view(bshape), sdyd.view(bshape)


def forward(xv: Tensor, weight, bias, kernel: int, eps: float, constant: float, k: int, batch: int,
            out: Tensor | None = None):
    """Training-mode mean-only / L1 / top-k (L∞ = top-1) norm of a canonical view, without autograd.

    Returns (y, mean, scale, aux, idx) like the compiled kernels: scale = C·stat without ε (zeros
    for mean-only), aux = mean sign(x − μ) per channel for L1 or the signs at the top-k, (C, k),
    idx = the top-k's flat indices into xv, (C, k). y is ``out`` when given (xv's shape and strides).
    """
    bshape = _bshape(xv)
    C = xv.shape[1]
    n = xv.numel() // C
    mu = channel_sum(xv).div_(n)
    idx, aux = xv.new_empty((0, 0), dtype=torch.long), xv.new_empty(0)
    if kernel == KERNEL_MEAN:
        y = torch.sub(xv, mu, out=out)
        if bias is not None:
            y.add_(bias.view(bshape))
        return y, mu.reshape(-1), xv.new_zeros(C), aux, idx
    if kernel == KERNEL_L1:
        y = torch.sub(xv, mu, out=out)  # x − μ, in the output buffer used as scratch
        aux = channel_sum(torch.sign(y)).div_(n).view(-1)
        s = channel_sum(y.abs_()).mul_(constant / n)
    else:
        vals, idx, aux = topk_abs_deviation(xv, mu, k, batch)
        s = vals.mean(1).mul_(constant).view(bshape)
        y = out
    inv = (s + eps).reciprocal_()
    scale = inv if weight is None else inv * weight.view(bshape)
    shift = -mu * scale if bias is None else bias.view(bshape) - mu * scale
    y = channel_affine(xv, scale, shift, out=y)
    return y, mu.reshape(-1), s.reshape(-1), aux, idx


def backward(dy: Tensor, xv, mu: Tensor, s: Tensor, weight, aux: Tensor, idx: Tensor, kernel: int, eps: float,
             constant: float, k: int, batch: int):
    """Input, weight and bias gradients of ``forward`` (dweight is None without weight); ``batch``
    is not needed here (the other backends' interface)."""
    bshape = _bshape(dy)
    n = dy.numel() // dy.shape[1]
    if kernel == KERNEL_MEAN:
        sdy = channel_sum(dy)
        return torch.sub(dy, sdy / n), None, sdy.view(-1)
    mu, inv = mu.view(bshape), (s.view(bshape) + eps).reciprocal_()
    dx = torch.empty_like(xv)
    sdy, sdyd = dy_sums(dy, xv, mu, scratch=dx)
    a = inv if weight is None else inv * weight.view(bshape)  # γ/(s + ε)
    t = -(a * sdyd) * inv  # −S/(s + ε), S = Σ γ·dy·x̂
    if kernel == KERNEL_L1:
        torch.sub(xv, mu, out=dx).sign_()
        b = t * (constant / n)
        channel_affine(dx, b, -a * sdy / n - b * aux.view(bshape), out=dx).addcmul_(dy, a)
    else:
        coef = (t * (constant / k)).view(-1, 1) * aux  # sparse part at the top-k, (C, k)
        channel_affine(dy, a, -a * sdy / n - coef.sum(1).view(bshape) / n, out=dx)
        dx.view(-1).index_add_(0, idx.reshape(-1), coef.reshape(-1))
    gw = (sdyd * inv).view(-1) if weight is not None else None
    return dx, gw, sdy.view(-1)
