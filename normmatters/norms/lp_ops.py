"""The fused batch-statistics norms: one entry point, eager autograd and torch.compile custom ops.

``lp_batch_norm_train(x, weight, bias, kind, eps, constant, k)`` → (y, mean, scale) for kinds
with a fused kernel in ``kinds.py`` (equations in ``lp_batchnorm.py``; scale = C·stat without ε). It
runs the kind's code path on the backend ``kernels`` picks for the device (C++ on CPU, Triton on CUDA,
else the PyTorch ops of ``kernels/python_lp.py``). Under torch.compile it calls the custom ops
``normmatters::lp_bn_forward`` / ``lp_bn_backward`` (fake implementations and a registered autograd
formula make them opaque to the compiler: no graph break, same kernels); in eager mode a plain
autograd Function calls the same implementations. Backward is not itself differentiable.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import kernels
from .kinds import FUSED_KINDS, KERNEL_L1, KERNEL_MEAN, KINDS


def _canonical(x: Tensor):
    """x (N, C, *) as (N, C, L) if contiguous or (N·L, C) if channels-last contiguous, and the
    function that puts a tensor of that canonical shape back in x's shape and layout."""
    C, shape = x.shape[1], x.shape
    if x.dim() == 2:
        return x, lambda t: t
    if x.is_contiguous():
        return x.view(shape[0], C, -1), lambda t: t.view(shape)
    moved = x.movedim(1, -1)  # the caller made x contiguous in one of the two layouts
    return moved.reshape(-1, C), lambda t: t.view(moved.shape).movedim(-1, 1)


def _dense(x: Tensor) -> Tensor:
    """x itself if contiguous or (rank > 2) channels-last contiguous, else a contiguous copy."""
    if x.is_contiguous() or (x.dim() > 2 and x.movedim(1, -1).is_contiguous()):
        return x
    return x.contiguous()


def _aux_shapes(kernel: int, C: int, k: int):
    if kernel == KERNEL_MEAN:
        return (0,), (0, 0)
    if kernel == KERNEL_L1:
        return (C,), (0, 0)
    return (C, k), (C, k)


def _forward(x, weight, bias, kernel, eps, constant, k):
    """y is a new tensor of x's shape and layout (not a view): the kernels write into its canonical
    view. What the autograd Function returns must not be a view made inside it: autograd refuses
    to let such a view be modified in place, and every in-place activation after a norm
    (nn.ReLU(inplace=True), ReLU6, SiLU(inplace=True) in torchvision's and timm's models) does."""
    y = torch.empty_like(x)  # x is dense (contiguous or channels-last), so y has x's strides
    xv, yv = _canonical(x)[0], _canonical(y)[0]
    _, mu, scale, aux, idx = kernels.forward(xv, weight, bias, kernel, eps, constant, k, x.shape[0], yv)
    return y, mu, scale, aux, idx


def _backward_impl(dy, x, mean, scale, weight, aux, idx, kernel, eps, constant, k):
    if x is not None and dy.stride() != x.stride():  # e.g. a broadcast gradient: the kernels want x's layout
        dy = torch.empty_like(x).copy_(dy)
    dy = _dense(dy)
    dyv, restore = _canonical(dy)
    xv = None if x is None else _canonical(x)[0]
    dx, gw, gb = kernels.backward(dyv, xv, mean, scale, weight, aux, idx, kernel, eps, constant, k, dy.shape[0])
    return restore(dx), gw, gb


@torch.library.custom_op("normmatters::lp_bn_forward", mutates_args=())
def lp_bn_forward(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], kernel: int, eps: float,
                  constant: float, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _forward(x, weight, bias, kernel, eps, constant, k)


@lp_bn_forward.register_fake
def _(x, weight, bias, kernel, eps, constant, k):
    C = x.shape[1]
    aux, idx = _aux_shapes(kernel, C, k)
    return (torch.empty_like(x), x.new_empty(C), x.new_empty(C), x.new_empty(aux),
            x.new_empty(idx, dtype=torch.long))


@torch.library.custom_op("normmatters::lp_bn_backward", mutates_args=())
def lp_bn_backward(dy: Tensor, x: Optional[Tensor], mean: Tensor, scale: Tensor, weight: Optional[Tensor],
                   aux: Tensor, idx: Tensor, kernel: int, eps: float, constant: float,
                   k: int) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); x is None for mean-only (its backward never reads x), dweight is empty
    without weight. dx has x's layout (dy's for mean-only)."""
    dx, gw, gb = _backward_impl(dy, x, mean, scale, weight, aux, idx, kernel, eps, constant, k)
    return dx, (gw if gw is not None else dy.new_empty(0)), gb


@lp_bn_backward.register_fake
def _(dy, x, mean, scale, weight, aux, idx, kernel, eps, constant, k):
    C = dy.shape[1]
    dx = torch.empty_like(x) if x is not None else torch.empty_like(_dense(dy))
    return dx, dy.new_empty(C if weight is not None else 0), dy.new_empty(C)


def _setup_context(ctx, inputs, output):
    x, weight, bias, kernel, eps, constant, k = inputs
    _, mu, scale, aux, idx = output
    ctx.save_for_backward(None if kernel == KERNEL_MEAN else x, mu, scale, weight, aux, idx)
    ctx.options = (kernel, eps, constant, k)
    ctx.needs = (weight is not None, bias is not None)


def _backward(ctx, dy, _dmu, _ds, _daux, _didx):
    x, mu, scale, weight, aux, idx = ctx.saved_tensors
    kernel, eps, constant, k = ctx.options
    dx, gw, gb = lp_bn_backward(dy, x, mu, scale, weight, aux, idx, kernel, eps, constant, k)
    return dx, (gw if ctx.needs[0] else None), (gb if ctx.needs[1] else None), None, None, None, None


lp_bn_forward.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The same kernels in eager mode. The custom op's Python autograd wrapper costs ~0.1 ms per
    call and leaves garbage that triggers full gc passes (milliseconds) in a training loop."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel, eps, constant, k):
        y, mu, scale, aux, idx = _forward(x, weight, bias, kernel, eps, constant, k)
        ctx.save_for_backward(None if kernel == KERNEL_MEAN else x, mu, scale, weight, aux, idx)
        ctx.options = (kernel, eps, constant, k)
        ctx.mark_non_differentiable(mu, scale)
        return y, mu, scale

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, _dmu, _ds):
        x, mu, scale, weight, aux, idx = ctx.saved_tensors
        dx, gw, gb = _backward_impl(dy, x, mu, scale, weight, aux, idx, *ctx.options)
        gw = gw if ctx.needs_input_grad[1] else None
        return dx, gw, (gb if ctx.needs_input_grad[2] else None), None, None, None, None


def lp_batch_norm_train(x: Tensor, weight, bias, kind: str, eps: float, constant: float, k: int = 1):
    """Batch-statistics norm of x (N, C, *); returns (y, mean, scale), y in x's layout (contiguous
    or channels-last; any other strides are made contiguous first)."""
    if kind not in FUSED_KINDS:
        raise ValueError(f"kind={kind!r} is invalid for the fused norms; valid: {', '.join(FUSED_KINDS)}")
    spec = KINDS[kind]
    n = x.numel() // x.shape[1]
    k = spec.kernel_k(k)
    if spec.takes_k and not 1 <= k <= n:
        raise ValueError(f"k={k} is invalid for this batch: {kind} needs 1 <= k <= n={n} elements per channel")
    weight, bias = (None if t is None else t.to(x.dtype) for t in (weight, bias))
    args = (_dense(x), weight, bias, spec.kernel, float(eps), float(constant), k)
    if torch.compiler.is_compiling():
        return lp_bn_forward(*args)[:3]
    return _Eager.apply(*args)
