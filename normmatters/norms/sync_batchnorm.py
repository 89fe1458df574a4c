"""Synchronized Lp batch norm: the statistics of :mod:`.lp_batchnorm` over the whole global batch,
i.e. over the shards of every rank of a process group, with the exact gradient.

PyTorch has ``nn.SyncBatchNorm`` for L2 (used here on CUDA); nothing exists for L1, L∞, top-k or
mean-only. With N the global count per channel (summed over ranks):

    μ = all_sum(Σx) / N                          (first: every scale is about x − μ)
    l2:   var  = all_sum(Σ(x − μ)²) / N
    l1:   stat = all_sum(Σ|x − μ|) / N
    linf: stat = max over ranks of max|x − μ|     (each rank's maximum, gathered)
    topk: stat = mean of the k largest of the ranks' k largest |x − μ| (k candidates per rank)

then C(N)·stat and the affine exactly as in one process. Which reduction a kind's statistic is, and
so how the ranks combine it, is its row in ``kinds.py``. The sums go through the differentiable
``torch.distributed.nn`` all-reduce (its backward all-reduces the gradient, as SyncBatchNorm's
backward does) and the maxima through its differentiable all-gather (the gradient returns to the
rank that owns the chosen element), so autograd gives every rank ∂(Σ_ranks loss)/∂x; DDP's mean
over ranks then equals one process's gradient of the global batch. Ranks may hold different
batch sizes. Narrow-precision statistics, the ghost top-k and one-pass variance are not
synchronized (:func:`convert_sync` refuses them).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn
from torch import Tensor

from .lp_batchnorm import LpBatchNorm
from .precision import channel_rows


def _group_size(group) -> int:
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


class SyncLpBatchNorm(LpBatchNorm):
    """LpBatchNorm whose training statistics span every rank of ``process_group`` (None: all)."""

    def __init__(self, *args, process_group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or _group_size(self.process_group) == 1:
            return super().forward(x)
        n_local = self._check_input(x)
        if self.spec.takes_k and n_local < 1:
            raise ValueError(f"{self.kind} batch norm got an empty shard of shape {tuple(x.shape)}")
        factor = self._count_batch()
        y, mu, stat, n = self._sync_forward(x)
        if self.track_running_stats:
            self._update_running(mu, stat, n, factor)
        return y

    def _all_sum(self, t: Tensor) -> Tensor:
        return dist_fn.all_reduce(t, group=self.process_group)

    def _all_max(self, t: Tensor) -> Tensor:
        """Per-channel maximum over ranks of (C, m) candidates: (C, ranks·m)."""
        return torch.cat(dist_fn.all_gather(t.contiguous(), group=self.process_group), dim=1)

    def _sync_forward(self, x: Tensor):
        red = (0,) + tuple(range(2, x.dim()))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        n_local = xs.numel() // self.num_features
        count = torch.full((1,), float(n_local), dtype=torch.float64, device=xs.device)
        # one collective for Σx and the count; float64 keeps any count exact
        sums = self._all_sum(torch.cat([xs.sum(red, dtype=torch.float64), count]))
        n = int(sums[-1].item())
        if self.spec.takes_k and self.k > n:
            raise ValueError(f"k={self.k} is invalid for this batch: {self.kind} needs 1 <= k <= n={n} elements per channel")
        mu = (sums[:-1] / n).to(xs.dtype)
        d = xs - mu.view(shape)
        statistic = self.spec.statistic
        if statistic is None:  # mean-only
            y = d if self.bias is None else d + self.bias.view(shape)
            return y.to(x.dtype), mu, None, n
        stat = self._reduce(statistic.reduce, statistic.of(d), red, n)
        if self.spec.is_variance:
            y = d * torch.rsqrt(stat + self.eps).view(shape)
        else:
            stat = stat * self._constant(n)
            y = d / (stat + self.eps).view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y.to(x.dtype), mu, stat, n

    def _reduce(self, how: str, t: Tensor, red: tuple, n: int) -> Tensor:
        """The statistic's per-channel reduction of t over every rank's shard, (C,)."""
        if how == "mean":  # the ranks' sums added up
            return self._all_sum(t.sum(red)) / n
        if how == "max":  # the ranks' maxima gathered
            return self._all_max(t.amax(red).unsqueeze(1)).amax(1)
        return self._all_max(self._candidates(t)).topk(self.k, dim=1).values.mean(1)  # "top_mean"

    def _candidates(self, a: Tensor) -> Tensor:
        """This rank's k largest |x − μ| per channel, padded with −1 (never chosen) to k columns."""
        rows = channel_rows(a)
        top = rows.topk(min(self.k, rows.shape[1]), dim=1).values
        if top.shape[1] < self.k:
            top = torch.cat([top, top.new_full((top.shape[0], self.k - top.shape[1]), -1.0)], dim=1)
        return top


UNSYNCED = {"stats_dtype": None, "accum_dtype": None, "ghost_beta": None, "ghost_constant": "twice",
            "variance": "two_pass", "exact_backward": False}


def _sync_layer(layer: LpBatchNorm, process_group) -> nn.Module:
    for key, plain in UNSYNCED.items():
        if getattr(layer, key) != plain:
            raise ValueError(f"train.sync_norm=true cannot synchronize norm option {key}={getattr(layer, key)!r}; "
                             f"valid: {plain!r}, or train.sync_norm=false (per-device statistics)")
    on_cuda = layer.running_mean is not None and layer.running_mean.is_cuda
    if layer.spec.is_variance and on_cuda:  # PyTorch's own, same state_dict keys as L2 LpBatchNorm
        new = nn.SyncBatchNorm(layer.num_features, layer.eps, layer.momentum, layer.affine,
                               layer.track_running_stats, process_group)
    else:
        new = SyncLpBatchNorm(layer.num_features, layer.kind, layer.eps, layer.momentum, layer.affine,
                              layer.track_running_stats, k=layer.k or 10, constant=layer.constant,
                              fused=layer.fused, process_group=process_group)
    floats = [t for t in (*layer.parameters(), *layer.buffers()) if t.is_floating_point()]
    if floats:  # the layer's device and dtype (a float64 model's norms stay float64)
        new = new.to(device=floats[0].device, dtype=floats[0].dtype)
    new.load_state_dict(layer.state_dict())
    new.train(layer.training)
    return new


def convert_sync(model: nn.Module, process_group=None) -> nn.Module:
    """Replace every Lp batch norm of ``model`` (in place where nested) by its synchronized form;
    returns the model (or the new layer, when ``model`` itself is one)."""
    if isinstance(model, LpBatchNorm) and not isinstance(model, SyncLpBatchNorm):
        return _sync_layer(model, process_group)
    for name, child in model.named_children():
        new = convert_sync(child, process_group)
        if new is not child:
            setattr(model, name, new)
    return model
