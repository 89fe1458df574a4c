"""Flushing subnormal floats to zero for one run, then giving the process its setting back.

x86 CPUs run some kernels (oneDNN's 1x1 convolution backward among them) orders of magnitude slower
on subnormal inputs, which tiny models at paper learning rates reach. Flushing changes the
arithmetic, so it is a per-run choice (`train.flush_denormal`) that must not leak into the next run
of the same process (a notebook, an in-process sweep). torch sets the calling thread's flag only;
intra-op threads take it when they start, so set it before the first parallel op of the process
(a thread pool already running keeps the state it started with).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def flushing() -> bool:
    """Whether this thread flushes subnormals now (torch has a setter but no getter)."""
    return (torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() == 0.0


@contextlib.contextmanager
def flushing_denormals(on: bool) -> Iterator[None]:
    if not on:
        yield
        return
    before = flushing()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
