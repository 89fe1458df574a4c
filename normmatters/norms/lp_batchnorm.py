"""Lp batch normalization (PAPER.md §3): L2, L1, L∞, top-k and mean-only, one class for any rank.

All kinds normalise per channel (dim 1) over every other dimension, n elements per channel, with
μ the channel mean:

    l2:   x̂ = (x − μ) / √(var + ε)                    var = mean((x − μ)²)
    l1:   x̂ = (x − μ) / (C_L1 · mean|x − μ| + ε)       C_L1 = √(π/2)
    linf: x̂ = (x − μ) / (C_L∞(n) · max|x − μ| + ε)     C_L∞(n) = ½(1 + √(π ln 4)) / √(2 ln n)
    topk: x̂ = (x − μ) / (C_L∞(n) · mean of the k largest |x − μ| + ε)
    y = γ·x̂ + β                                         (affine)
    mean: y = x − μ + β                                 (mean-only BN, used with weight norm)

Running statistics follow PyTorch's convention, running ← (1 − m)·running + m·batch_stat
(``momentum=None``: cumulative average), and are used in eval mode. ``l2`` keeps running_mean and
the unbiased running_var exactly like ``nn.BatchNorm2d`` (same state_dict keys). The Lp kinds keep
``running_scale``, the normalising denominator C·stat itself (without ε). Note: the authors' code
used the reverse momentum convention (running ← m·running + (1 − m)·stat) and stored the inverse
scale; a checkpoint of theirs needs momentum 1 − m and 1/scale to be loaded here.

``ghost_beta`` (topk only) reproduces the layer the authors' figures label "Top10"
(``GhostTopkBatchNorm2d`` in eladhoffer/norm_matters): in training the denominator is not this
batch's C·T but m_t = C·(β·m_{t−1} + (1 − β)·T_t), m kept in a buffer (gradient through T_t
only). The constant multiplies a value that already carries it, so in a steady state
m = C(1 − β)/(1 − Cβ)·T, not C·T: for C ≈ 0.32 and β = 0.75, a third of it. ``ghost_constant="once"``
averages C·T instead, m_t = β·m_{t−1} + (1 − β)·C·T_t (steady state C·T): the same layer without that
one difference, to tell its effect from the moving average's.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .constants import DEFAULT_TOPK
from .kinds import KINDS, SCALE_KINDS, NormKind, norm_kind
from .lp_ops import lp_batch_norm_train
from .precision import (FLOAT8, channel_mean, channel_rows, check_accum_mode, compute_dtype, is_narrow, narrow_mean_rows,
                        resolve_dtype, rounder)

_FUSED_DEFAULT = True
# l2's variance: mean((x − μ)²) (two_pass), or E[x²] − E[x]² (one_pass, what fast kernels compute;
# it cancels catastrophically in a narrow float when a channel's mean is large against its spread)
VARIANCES = ("two_pass", "one_pass")
GHOST_CONSTANTS = ("twice", "once")  # the authors' ghost top-k applies C to the average too, or not


def set_fused_default(enabled: bool) -> None:
    """Global default for layers built with ``fused=None`` (read at every forward)."""
    global _FUSED_DEFAULT
    _FUSED_DEFAULT = bool(enabled)


def get_fused_default() -> bool:
    return _FUSED_DEFAULT


class LpBatchNorm(nn.Module):
    """Batch norm with an L2/L1/L∞/top-k scale, or mean-only, over inputs (N, C, *) of rank ≥ 2.

    Args mirror ``nn.BatchNorm2d`` (num_features, eps, momentum, affine, track_running_stats) plus:
        kind: "l2" | "l1" | "linf" | "topk" | "mean".
        k: number of largest deviations averaged by "topk" (1 ≤ k ≤ n; default 10).
        constant: replaces C_L1 ("l1") or C_L∞(n) ("linf", "topk"); must be > 0 (C_L1 ablation).
        stats_dtype: dtype of the normalisation arithmetic (default: the input's dtype, float32
            for float16/bfloat16 inputs). See ``precision.py``.
        accum_dtype: dtype of the per-channel reductions' partial results (default: stats_dtype,
            at least float32). float16/bfloat16 are emulated honestly, see ``precision.py``.
        accum_mode: "pairwise_mean" or "pairwise_sum", only used by a narrow accum_dtype.
        exact_backward: with a narrow stats/accum dtype, the forward in that format and the backward
            of the float32 layer (straight-through), so the format's effect on the statistics can be
            told from its rounding of the gradients (8-bit floats flush most of them to zero).
        fused: use the fused kernels for l1/linf/topk/mean in training (None: the global default,
            see ``set_fused_default``), in eager mode and under torch.compile (custom ops, see
            ``lp_ops.py``); False traces the plain equations (e.g. for double backward).
    """

    def __init__(self, num_features: int, kind: str = "l1", eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, k: int = DEFAULT_TOPK,
                 constant: float | None = None, stats_dtype=None, accum_dtype=None,
                 accum_mode: str = "pairwise_mean", fused: bool | None = None, ghost_beta: float | None = None,
                 ghost_constant: str = "twice", variance: str = "two_pass", exact_backward: bool = False,
                 device=None, dtype=None):
        super().__init__()
        spec = norm_kind(kind)
        kind = spec.name
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features={num_features!r} must be a positive int")
        if not eps >= 0:
            raise ValueError(f"eps={eps!r} must be >= 0")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1] or None (cumulative average)")
        if spec.takes_k and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"k={k!r} is invalid for topk; valid: an int with 1 <= k <= n (elements per channel)")
        if constant is not None:
            if spec.constant is None:
                raise ValueError(f"constant={constant!r} applies only to kinds {', '.join(SCALE_KINDS)}, not {kind!r}")
            if not (isinstance(constant, (int, float)) and math.isfinite(constant) and constant > 0):
                raise ValueError(f"constant={constant!r} is invalid; valid: a finite number > 0 (default C_L1 = √(π/2) or C_Linf(n))")
        if ghost_beta is not None and (not spec.takes_k or isinstance(ghost_beta, bool)
                                       or not isinstance(ghost_beta, (int, float)) or not 0 <= ghost_beta < 1):
            raise ValueError(f"ghost_beta={ghost_beta!r} is invalid; valid: null, or a number in [0, 1) with kind topk")
        self.ghost_beta = None if ghost_beta is None else float(ghost_beta)
        if ghost_constant not in GHOST_CONSTANTS or (ghost_constant != "twice" and ghost_beta is None):
            raise ValueError(f"ghost_constant={ghost_constant!r} is invalid; valid: {', '.join(GHOST_CONSTANTS)} "
                             "(once: with ghost_beta only)")
        self.ghost_constant = ghost_constant
        if variance not in VARIANCES or (variance != "two_pass" and not spec.is_variance):
            raise ValueError(f"variance={variance!r} is invalid; valid: {', '.join(VARIANCES)} (one_pass: kind l2 only)")
        self.variance = variance
        self.num_features, self.kind, self.eps, self.momentum = num_features, kind, float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.k = int(k) if spec.takes_k else None
        self.constant = None if constant is None else float(constant)
        self.stats_dtype = resolve_dtype(stats_dtype, "stats_dtype")
        self.accum_dtype = resolve_dtype(accum_dtype, "accum_dtype")
        self.accum_mode = check_accum_mode(accum_mode)
        narrow = is_narrow(self.stats_dtype) or is_narrow(self.accum_dtype)
        if not isinstance(exact_backward, bool) or (exact_backward and (not narrow or ghost_beta is not None)):
            raise ValueError(f"exact_backward={exact_backward!r} is invalid; valid: false, or true with a narrow "
                             "stats_dtype or accum_dtype and no ghost_beta")
        self.exact_backward = exact_backward
        self.fused = fused
        fk = {"device": device, "dtype": dtype}
        has_weight = affine and spec.statistic is not None  # mean-only has no scale to multiply
        self.weight = nn.Parameter(torch.empty(num_features, **fk)) if has_weight else None
        self.bias = nn.Parameter(torch.empty(num_features, **fk)) if affine else None
        stat_name = self._stat_name = spec.running
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **fk))
            if stat_name:
                self.register_buffer(stat_name, torch.ones(num_features, **fk))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            if stat_name:
                self.register_buffer(stat_name, None)
            self.register_buffer("num_batches_tracked", None)
        if self.ghost_beta is not None:
            self.register_buffer("ghost_stat", torch.zeros(num_features, **fk))
        self.reset_parameters()

    @property
    def spec(self) -> NormKind:
        """This kind's row of the table in ``kinds.py``."""
        return KINDS[self.kind]

    # ----------------------------------------------------------------- setup helpers
    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            if self._stat_name:
                getattr(self, self._stat_name).fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        s = (f"{self.num_features}, kind={self.kind}, eps={self.eps}, momentum={self.momentum}, "
             f"affine={self.affine}, track_running_stats={self.track_running_stats}")
        if self.k is not None:
            s += f", k={self.k}"
        if self.constant is not None:
            s += f", constant={self.constant:.6g}"
        if self.ghost_beta is not None:
            s += f", ghost_beta={self.ghost_beta}, ghost_constant={self.ghost_constant}"
        if self.variance != "two_pass":
            s += f", variance={self.variance}"
        if self.exact_backward:
            s += ", exact_backward=True"
        for name in ("stats_dtype", "accum_dtype"):
            if getattr(self, name) is not None:
                s += f", {name}={str(getattr(self, name)).replace('torch.', '')}"
        return s + ("" if self.fused is None else f", fused={self.fused}")

    def _dtypes(self, x: Tensor):
        sdt = self.stats_dtype or (torch.float32 if is_narrow(x.dtype) else x.dtype)
        acc = self.accum_dtype or (torch.float32 if is_narrow(sdt) else sdt)
        return sdt, acc

    def _constant(self, n: int) -> float:
        if self.constant is not None:
            return self.constant
        return self.spec.constant(n)

    def _check_input(self, x: Tensor) -> int:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"{self.kind} batch norm expects input (N, {self.num_features}, ...) with "
                             f"{self.num_features} channels in dim 1, got shape {tuple(x.shape)}")
        return x.numel() // self.num_features

    # ----------------------------------------------------------------- forward
    def _count_batch(self) -> float:
        """Count a training batch; the weight of its statistics in the running ones."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        return factor

    def forward(self, x: Tensor) -> Tensor:
        n = self._check_input(x)
        factor = self._count_batch()
        use_batch = self.training or self.running_mean is None
        sdt, acc = self._dtypes(x)
        # Without precision options, PyTorch's own kernels are fine (float32 statistics for
        # float16/bfloat16 inputs); with them, only where they compute in exactly those dtypes.
        default_precision = self.stats_dtype is None and self.accum_dtype is None
        plain_precision = default_precision or (sdt == x.dtype and acc == sdt and not is_narrow(sdt))
        spec = self.spec
        if spec.is_variance and plain_precision and self.variance == "two_pass":  # exactly nn.BatchNorm's computation
            update = not self.training or self.track_running_stats
            return F.batch_norm(x, self.running_mean if update else None, self.running_var if update else None,
                                self.weight, self.bias, use_batch, factor, self.eps)
        if not use_batch:
            return self._eval_forward(x, sdt)
        if use_batch and n < 2 and spec.statistic is not None:
            raise ValueError(f"{self.kind} batch norm needs more than 1 value per channel in training, "
                             f"got input shape {tuple(x.shape)}")
        if spec.takes_k and self.k > n:
            raise ValueError(f"k={self.k} is invalid for this batch: {self.kind} needs 1 <= k <= n={n} elements per channel")
        fused = _FUSED_DEFAULT if self.fused is None else self.fused
        ghost = self.ghost_beta is not None and self.training
        if fused and spec.kernel is not None and plain_precision and not ghost:  # the kernels (lp_ops.py)
            scaled = spec.statistic is not None
            constant = self._constant(n) if scaled else 1.0
            y, mu, stat = lp_batch_norm_train(x.to(sdt), self.weight, self.bias, self.kind, self.eps, constant,
                                              spec.kernel_k(self.k))
            y, stat = y.to(x.dtype), (stat if scaled else None)
        else:
            y, mu, stat = self._batch_forward(x, n, sdt, acc)
            if self.exact_backward:  # straight-through: this forward's values, the float32 layer's gradient
                exact = self._batch_forward(x.float(), n, torch.float32, torch.float32)[0].to(y.dtype)
                y = exact + (y - exact).detach()
        if self.training and self.track_running_stats:
            self._update_running(mu, stat, n, factor)
        return y

    def _batch_forward(self, x: Tensor, n: int, sdt, acc):
        """The equations of the module docstring, written out (also the torch.compile path)."""
        red = (0,) + tuple(range(2, x.dim()))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        q, sdt = rounder(sdt), compute_dtype(sdt)  # 8-bit floats: float32 arithmetic, each step rounded
        xs = q(x.to(sdt))
        mu = q(channel_mean(xs, red, acc, self.accum_mode))
        d = q(xs - mu)
        statistic = self.spec.statistic
        if statistic is None:  # mean-only
            y = d if self.bias is None else d + self.bias.to(sdt).view(shape)
            return y.to(x.dtype), mu.view(-1), None
        if self.variance == "one_pass":  # E[x²] − μ² (a variance kind only, checked in __init__)
            stat = q(q(channel_mean(q(xs * xs), red, acc, self.accum_mode)) - q(mu * mu))
        else:
            stat = self._reduce(statistic.reduce, q(statistic.of(d)), red, shape, q, sdt, acc)
        if self.spec.is_variance:  # the biased batch variance
            y = d * torch.rsqrt(stat + self.eps)
        else:
            if self.ghost_beta is not None and self.training:  # ghost_beta: top-k only
                stat = self._ghost(stat, n)
            else:
                stat = q(stat * self._constant(n))
            y = d / (stat + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(sdt).view(shape)
        if self.bias is not None:
            y = y + self.bias.to(sdt).view(shape)
        return y.to(x.dtype), mu.view(-1), stat.view(-1)

    def _reduce(self, how: str, t: Tensor, red: tuple, shape: tuple, q, sdt, acc) -> Tensor:
        """The statistic's per-channel reduction of t (kinds.py) in this layer's precision (rounding
        q, compute dtype sdt, accumulator acc), keepdim."""
        if how == "mean":
            return q(channel_mean(t, red, acc, self.accum_mode))
        if how == "max":
            return t.amax(red, keepdim=True)
        top = channel_rows(t).topk(self.k, dim=1).values  # "top_mean"
        top = narrow_mean_rows(top, acc, self.accum_mode) if is_narrow(acc) else top.mean(1, dtype=acc)
        return q(top.to(sdt)).view(shape)

    def _ghost(self, top_mean: Tensor, n: int) -> Tensor:
        """m_t = C·(β·m_{t−1} + (1 − β)·T_t), the authors' "Top10" denominator (see the module docstring);
        with ghost_constant="once", m_t = β·m_{t−1} + (1 − β)·C·T_t."""
        beta, c = self.ghost_beta, self._constant(n)
        prev = self.ghost_stat.to(top_mean.dtype).view_as(top_mean)
        if self.ghost_constant == "once":
            m = beta * prev + (1 - beta) * c * top_mean
        else:
            m = (beta * prev + (1 - beta) * top_mean) * c
        with torch.no_grad():
            self.ghost_stat.copy_(m.detach().view(-1))
        return m

    def _eval_forward(self, x: Tensor, sdt) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if sdt in FLOAT8:  # evaluation: the running statistics in float32 on inputs rounded to the format
            x, sdt = rounder(sdt)(x.float()), torch.float32
        mean = self.running_mean
        if self.spec.statistic is None:  # mean-only
            shift = -mean if self.bias is None else self.bias - mean
            return (x.to(sdt) + shift.to(sdt).view(shape)).to(x.dtype)
        stat = getattr(self, self.spec.running)
        if self.spec.is_variance:
            inv = torch.rsqrt(stat + self.eps)
        else:
            inv = 1.0 / (stat + self.eps)
        scale = inv if self.weight is None else inv * self.weight
        shift = -mean * scale if self.bias is None else self.bias - mean * scale
        y = torch.addcmul(shift.to(sdt).view(shape), x.to(sdt), scale.to(sdt).view(shape))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mu: Tensor, stat, n: int, factor: float) -> None:
        self.running_mean.mul_(1.0 - factor).add_(mu.detach().to(self.running_mean.dtype), alpha=factor)
        if stat is None:
            return
        stat = stat.detach().to(self.running_mean.dtype)
        if self.spec.is_variance:  # kept unbiased, like nn.BatchNorm
            stat = stat * (n / (n - 1))
        getattr(self, self.spec.running).mul_(1.0 - factor).add_(stat, alpha=factor)
