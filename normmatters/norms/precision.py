"""Precision control for the batch-norm statistics (PAPER.md §4), runnable on a CPU.

Two independent choices per layer:

- ``stats_dtype``: the dtype of every elementwise step of the normalisation (x − μ, |·|, squares,
  square roots, divisions, the affine transform). On a CPU, PyTorch evaluates a float16/bfloat16
  elementwise op in float32 and rounds the result once; for +, −, ×, ÷ and √ that equals the
  correctly rounded narrow op (float32 has ≥ 2p+2 significand bits for p = 11 or 8, so the double
  rounding is innocuous), i.e. the same numbers narrow hardware produces.
- ``accum_dtype``: the dtype of every partial result of the per-channel reductions (means).
  A wide accumulator (float32/float64) is PyTorch's own reduction with ``dtype=`` set. A narrow one
  cannot be had from PyTorch directly: CPU reductions over float16 accumulate in float32
  internally and round only the final result. We therefore emulate it with an explicit pairwise
  (tree) reduction in which every level is a narrow elementwise op, so every partial result is
  rounded to the narrow type exactly as a narrow accumulator would be:

  * ``accum_mode="pairwise_mean"`` (default): each level stores a·½ + b·½ (a mean of means).
    Partial results stay within the range of the data, so the reduction cannot overflow; this is
    how one would compute a mean on fp16-only hardware.
  * ``accum_mode="pairwise_sum"``: each level stores a + b and the root is divided by n once.
    Partial sums grow with n and overflow float16 (max 65504) once n·|x| is large, exactly as a
    naive fp16 sum does.

  The row is zero-padded to a power of two; for ``pairwise_mean`` the root is then multiplied by
  2^L/n ∈ [1, 2) in the narrow type. A pairwise tree has O(log n) rounding error growth, which is
  the favourable case for a narrow accumulator (a sequential one grows O(n)); results therefore
  bound what fp16 accumulation can achieve from below, they do not exaggerate its errors.
"""
from __future__ import annotations

import torch
from torch import Tensor

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
    "float8_e4m3fn": torch.float8_e4m3fn, "e4m3": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2, "e5m2": torch.float8_e5m2,
}
# 8-bit floats have no CPU arithmetic: they are emulated by computing in float32 and rounding the
# statistics' inputs, every elementwise step and every partial sum to the 8-bit format (`rounder`).
FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)
NARROW_DTYPES = (torch.float16, torch.bfloat16, *FLOAT8)
ACCUM_MODES = ("pairwise_mean", "pairwise_sum")


def resolve_dtype(spec, option: str = "dtype") -> torch.dtype | None:
    """Map None, a torch floating dtype or a name ("float32", "bf16", "half", ...) to a dtype."""
    if spec is None or isinstance(spec, torch.dtype) and spec in _DTYPES.values():
        return spec
    if isinstance(spec, str) and spec.strip().lower() in _DTYPES:
        return _DTYPES[spec.strip().lower()]
    valid = "float32, bfloat16, float16, float64, float8_e4m3fn, float8_e5m2 (or a torch dtype)"
    raise ValueError(f"{option}={spec!r} is not a supported dtype; valid: {valid}")


def check_accum_mode(mode: str) -> str:
    if mode not in ACCUM_MODES:
        raise ValueError(f"accum_mode={mode!r} is not valid; valid: {', '.join(ACCUM_MODES)}")
    return mode


def is_narrow(dtype: torch.dtype) -> bool:
    return dtype in NARROW_DTYPES


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype arithmetic runs in: float32 for the 8-bit floats (emulated), else ``dtype`` itself."""
    return torch.float32 if dtype in FLOAT8 else dtype


def rounder(dtype: torch.dtype, always: bool = False):
    """t ↦ t rounded to ``dtype`` and back to float32 for the 8-bit floats (PyTorch's conversion:
    round to nearest even; e4m3fn saturates at ±448, e5m2 overflows to inf); the identity otherwise,
    since float16/bfloat16 tensors round themselves — unless ``always`` (float32 inputs to round)."""
    if dtype not in FLOAT8 and not always:
        return lambda t: t
    return lambda t: t.to(dtype).to(torch.float32)


def narrow_mean_rows(rows: Tensor, dtype: torch.dtype, mode: str = "pairwise_mean") -> Tensor:
    """Mean along the last dim of a (C, n) tensor with every partial result rounded to `dtype`."""
    if dtype in FLOAT8:
        return _float8_mean_rows(rows, dtype, mode)
    rows = rows.to(dtype)
    n = rows.shape[-1]
    size = 1 << max(n - 1, 0).bit_length()  # next power of two ≥ n
    if size != n:
        rows = torch.nn.functional.pad(rows, (0, size - n))
    while rows.shape[-1] > 1:
        h = rows.shape[-1] // 2
        a, b = rows[..., :h], rows[..., h:]
        # each op below is one narrow op (CPU computes in fp32 and rounds to `dtype` once)
        rows = a * 0.5 + b * 0.5 if mode == "pairwise_mean" else a + b
    root = rows[..., 0]
    if mode == "pairwise_mean":
        return root if size == n else root * (size / n)
    return root / n


def _float8_mean_rows(rows: Tensor, dtype: torch.dtype, mode: str) -> Tensor:
    """narrow_mean_rows for an 8-bit float: the same tree, each op in float32 and rounded to ``dtype``."""
    q = rounder(dtype)
    rows = q(rows.float())
    n = rows.shape[-1]
    size = 1 << max(n - 1, 0).bit_length()
    if size != n:
        rows = torch.nn.functional.pad(rows, (0, size - n))
    while rows.shape[-1] > 1:
        h = rows.shape[-1] // 2
        a, b = rows[..., :h], rows[..., h:]
        rows = q(q(a * 0.5) + q(b * 0.5)) if mode == "pairwise_mean" else q(a + b)
    root = rows[..., 0]
    if mode == "pairwise_mean":
        return root if size == n else q(root * (size / n))
    return q(root / n)


def channel_rows(t: Tensor) -> Tensor:
    """(N, C, *) -> (C, N·prod(*)) copy, channels as rows."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def channel_mean(t: Tensor, red: tuple, accum: torch.dtype, mode: str = "pairwise_mean") -> Tensor:
    """Per-channel mean of `t` (channel dim 1) with accumulator dtype `accum`, keepdim, in t.dtype."""
    if is_narrow(accum):
        m = narrow_mean_rows(channel_rows(t), accum, mode)
        shape = [1] * t.dim()
        shape[1] = t.shape[1]
        return m.view(shape).to(t.dtype)
    return t.mean(red, keepdim=True, dtype=accum).to(t.dtype)
