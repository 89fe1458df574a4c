"""The table of norm kinds: what each kind computes, read by every place that computes it.

Per kind (equations in ``lp_batchnorm.py``, constants in ``constants.py``):

- ``statistic``: of the centred input d = x − μ, per channel, a reduction ("mean", "max" or
  "top_mean", the mean of the k largest) of an elementwise function of d (d², |d|); None for
  mean-only. The plain layer (``LpBatchNorm``), the synchronized one (``SyncLpBatchNorm``) and
  the float64 references of the tests each implement the three reductions once, for every kind.
- ``combine`` (from the reduction): how the ranks of a process group combine it: sums of the
  ranks' sums ÷ the global count, the maximum of the ranks' maxima, or the k largest of the
  ranks' k largest.
- ``constant``: C(n) in the scale C(n)·statistic (``constant=`` of a layer replaces it); None
  where nothing multiplies the statistic.
- ``is_variance``: the statistic is the variance, x̂ = d/√(var + ε), running_var kept unbiased,
  and PyTorch's own batch norms compute it where the precision options allow.
- ``running``: the buffer of the running statistic (besides running_mean), or None.
- ``kernel``: the code path of the fused kernels (``kernels/``), or None (no fused kernel). The
  ids are ``KERNELS``; the C++ sources get them as compile-time defines, so this is their one copy.

"none" (no normalization: ``nn.Identity``) is a valid ``norm.kind`` but no layer, so not a row.

To add a kind: add a row to ``KINDS``. A new reduction (or elementwise function) needs its
implementation in ``LpBatchNorm._reduce``, ``SyncLpBatchNorm._reduce`` and the tests' references;
a fused kernel for it needs a code path in the three backends of ``kernels/`` and a ``KERNELS`` id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from .constants import C_L1, c_linf, check_kind

# The fused kernels' code paths: mean-only, L1 (mean |d| and the mean sign) and top-k (L∞ = top-1).
KERNELS = {"MEAN": 0, "L1": 1, "TOPK": 2}
KERNEL_MEAN, KERNEL_L1, KERNEL_TOPK = KERNELS["MEAN"], KERNELS["L1"], KERNELS["TOPK"]

# reduction of a statistic -> how the ranks of a process group combine it
COMBINE = {"mean": "sum", "max": "max", "top_mean": "top-k"}


def square(d: Tensor) -> Tensor:
    return d * d


def absolute(d: Tensor) -> Tensor:
    return d.abs()


@dataclass(frozen=True)
class Statistic:
    """``reduce`` over each channel of ``of(d)``, d = x − μ."""
    of: Callable[[Tensor], Tensor]
    reduce: str

    def __post_init__(self):
        if self.reduce not in COMBINE:
            raise ValueError(f"reduce={self.reduce!r} is invalid; valid: {', '.join(COMBINE)}")


@dataclass(frozen=True)
class NormKind:
    """One row of the table (fields: the module docstring)."""
    name: str
    statistic: Statistic | None
    constant: Callable[[int], float] | None = None
    is_variance: bool = False
    running: str | None = None
    kernel: int | None = None

    @property
    def combine(self) -> str | None:
        return None if self.statistic is None else COMBINE[self.statistic.reduce]

    @property
    def takes_k(self) -> bool:
        """Whether the option k (how many of the largest values) applies."""
        return self.statistic is not None and self.statistic.reduce == "top_mean"

    def kernel_k(self, k) -> int:
        """The k of the fused kernels' top-k path: the layer's k, L∞ = top-1; unused by the others."""
        return int(k) if self.takes_k else 1


def _c_l1(n: int) -> float:
    return C_L1


KINDS = {kind.name: kind for kind in (
    NormKind("l2", Statistic(square, "mean"), is_variance=True, running="running_var"),
    NormKind("l1", Statistic(absolute, "mean"), _c_l1, running="running_scale", kernel=KERNEL_L1),
    NormKind("linf", Statistic(absolute, "max"), c_linf, running="running_scale", kernel=KERNEL_TOPK),
    NormKind("topk", Statistic(absolute, "top_mean"), c_linf, running="running_scale", kernel=KERNEL_TOPK),
    NormKind("mean", None, kernel=KERNEL_MEAN),
)}
NORM_KINDS = (*KINDS, "none")  # what build_norm accepts (order of error messages and tables)
FUSED_KINDS = tuple(name for name, kind in KINDS.items() if kind.kernel is not None)
SCALE_KINDS = tuple(name for name, kind in KINDS.items() if kind.constant is not None)


def norm_kind(name) -> NormKind:
    """The row of ``name`` (case-insensitive), or a one-line ValueError listing the valid kinds."""
    return KINDS[check_kind(name, tuple(KINDS))]
